"""Pictures: an image with its region boxes, the region a referring expression picks, the regions a
VQA answer attends to (co-attention maps), and training curves.

    python -m vilbert.visualize grounding --image IMG --features STORE --image_id ID --bert_model DIR \
        [--expression "big red star" --refer_model CKPT] \
        [--question "What color is the star?" --vqa_model CKPT --answers label2ans.json \
         [--vqa_image IMG --vqa_features STORE --vqa_image_id ID]] --output grounding.png
    python -m vilbert.visualize curves --log pretrain=save/concap/logs/metrics.jsonl \
        --log VQA=save/VQA_x/logs/metrics.jsonl --output curves.png
    python -m vilbert.visualize curves --compare --keys VQA/accuracy --log before=... --log after=... --output c.png

`grounding` draws one panel per question asked of the model: (1) the image and every region box
of the feature store; (2) with an expression, the region the RefCOCO+ head (`vision_logit`) scores
highest, with the scores of the others as box opacity; (3) with a question, the answer of the VQA
head and how much attention the [CLS] token of the question pays to each region in the last
co-attention block (mean over heads), drawn as box opacity. The VQA panel may use another image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

# Matplotlib without a display: pictures go to files.
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_MAX_REGIONS = 101  # regions + the global one, as the originals' task readers


@dataclass
class Regions:
    """One image's model inputs and the pixel boxes of its region rows (row 0 = the whole image)."""

    features: torch.Tensor  # (1, R, D)
    locations: torch.Tensor  # (1, R, 5)
    mask: torch.Tensor  # (1, R) long
    boxes: np.ndarray  # (R, 4) pixels x1, y1, x2, y2; padding rows 0
    num_real: int  # rows with mask 1, the global row included


def load_regions(features, image_id, max_regions: int = DEFAULT_MAX_REGIONS) -> Regions:
    """The padded regions of `image_id` from a feature store (path) or a FeatureReader."""
    from vilbert.features import FeatureReader, pad_regions

    reader = features if isinstance(features, FeatureReader) else FeatureReader(features)
    padded = pad_regions(reader[image_id], max_regions)
    as_batch = lambda a, dtype: torch.from_numpy(np.asarray(a)).to(dtype)[None]  # noqa: E731
    return Regions(as_batch(padded.features, torch.float32), as_batch(padded.locations, torch.float32),
                   as_batch(padded.mask, torch.long), np.asarray(padded.boxes), int(padded.num_real))


def encode(tokenizer, text: str, max_length: int = 36) -> dict[str, torch.Tensor]:
    """[CLS] text [SEP] as model inputs of batch 1, cut to the text's length."""
    from vilbert.data.collate import TEXT_KEYS, encode_text

    arrays = encode_text(tokenizer, [text], max_length=max_length)
    length = int(arrays["attention_mask"].sum())
    return {key: torch.from_numpy(arrays[key][:, :length]).long() for key in TEXT_KEYS}


@torch.no_grad()
def refer_scores(model, tokenizer, expression: str, regions: Regions) -> np.ndarray:
    """(R,) probability of each real region being the one `expression` refers to (softmax of the
    RefCOCO+ head over the real regions; padding rows 0)."""
    model.eval()
    out = model(**encode(tokenizer, expression), image_feat=regions.features, image_loc=regions.locations,
                image_attention_mask=regions.mask, heads={"vision_logit"})
    logits = out.vision_logit[0, :, 0].float().masked_fill(regions.mask[0] == 0, float("-inf"))
    return logits.softmax(dim=0).numpy()


@torch.no_grad()
def vqa_attention(model, tokenizer, question: str, regions: Regions, layer: int = -1) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The VQA head's top answers (label ids, best first), their probabilities (sigmoid scores), and
    (R,) the attention of the question's [CLS] token over the regions in co-attention block `layer`,
    averaged over heads."""
    model.eval()
    out = model(**encode(tokenizer, question), image_feat=regions.features, image_loc=regions.locations,
                image_attention_mask=regions.mask, heads={"vil_prediction"}, output_attentions=True)
    probs = out.vil_prediction[0].float().sigmoid()  # BCE-trained: independent answer scores
    top = probs.topk(min(3, probs.numel()))
    maps = out.attentions["text_to_visual"]  # per block (1, H, T, R)
    if not maps:
        raise ValueError("the model has no co-attention blocks to show")
    attention = maps[layer][0, :, 0, :].float().mean(dim=0)  # [CLS] over regions, mean of heads: (R,)
    return top.indices.tolist(), top.values.numpy(), attention.numpy()


def show_image(ax, image_path, title: str = "") -> None:
    from PIL import Image

    image = Image.open(image_path).convert("RGB")
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_boxes(ax, boxes: np.ndarray, weights: Optional[np.ndarray] = None, color: str = "yellow",
               highlight: Optional[int] = None, linewidth: float = 1.5) -> None:
    """Rectangles for pixel boxes (n, 4); `weights` in [0, 1] set each box's opacity; the
    `highlight` box is drawn thick in red on top."""
    from matplotlib.patches import Rectangle

    peak = float(np.max(weights)) if weights is not None and len(weights) and np.max(weights) > 0 else 1.0
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=float)):
        alpha = 1.0 if weights is None else 0.15 + 0.85 * float(weights[i]) / peak
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth, alpha=alpha))
    if highlight is not None:
        x1, y1, x2, y2 = boxes[highlight]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=3))


def grounding_figure(output, *, image, features, image_id, tokenizer=None, expression: Optional[str] = None,
                     refer_model=None, true_box: Optional[Sequence[float]] = None, question: Optional[str] = None,
                     vqa_model=None, answers: Optional[list[str]] = None, vqa_image=None, vqa_features=None,
                     vqa_image_id=None, max_regions: int = DEFAULT_MAX_REGIONS) -> Path:
    """Write the `grounding` picture (module docstring) to `output` and return its path.

    Boxes exclude row 0 (the whole image). true_box: the referred object's box, drawn in green.
    """
    regions = load_regions(features, image_id, max_regions)
    real = slice(1, regions.num_real)  # the detected regions, without the global row
    panels = 1 + (expression is not None) + (question is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.8), squeeze=False, layout="constrained")
    axes = axes[0]
    show_image(axes[0], image, f"image {image_id}: {regions.num_real - 1} regions")
    draw_boxes(axes[0], regions.boxes[real])
    panel = 1
    if expression is not None:
        scores = refer_scores(refer_model, tokenizer, expression, regions)
        chosen = int(np.argmax(scores))
        show_image(axes[panel], image, f'"{expression}"\npicked region {chosen} (p = {scores[chosen]:.2f})')
        draw_boxes(axes[panel], regions.boxes[real], weights=scores[real], color="orange")
        draw_boxes(axes[panel], regions.boxes[chosen:chosen + 1], highlight=0, linewidth=0)
        if true_box is not None:
            from matplotlib.patches import Rectangle

            x1, y1, x2, y2 = true_box
            axes[panel].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime",
                                            linewidth=1.5, linestyle="--"))
        panel += 1
    if question is not None:
        q_image = vqa_image or image
        q_regions = load_regions(vqa_features or features, vqa_image_id if vqa_image_id is not None else image_id,
                                 max_regions)
        labels, probs, attention = vqa_attention(vqa_model, tokenizer, question, q_regions)
        names = [answers[i] if answers and i < len(answers) else str(i) for i in labels]
        top = ", ".join(f"{n} {p:.2f}" for n, p in zip(names, probs))
        show_image(axes[panel], q_image, f"Q: {question}\nA: {top}")
        q_real = slice(1, q_regions.num_real)
        draw_boxes(axes[panel], q_regions.boxes[q_real], weights=attention[q_real], color="cyan", linewidth=2.5)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return output


def read_metrics(path) -> list[dict]:
    """The records of a metrics.jsonl written by vilbert.training.TrainingLogger."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


LOSS_WORDS = ("loss", "masked", "alignment")  # series measured in loss units; the rest are metrics


def is_metric(key: str) -> bool:
    """A metric in percent (accuracy, R@k, ...) rather than a loss, from its logged name."""
    name = key.rsplit("/", 1)[-1]
    return name.endswith("accuracy") or not any(word in name for word in LOSS_WORDS)


# Learning rates, gradient norms, throughput and the count of steps skipped for a non-finite loss
# (the log reports those): drawn only when asked for by name.
SKIPPED_SERIES = ("/lr", "/lr_body", "/lr_bert", "grad_norm", "samples_per_s", "/skipped")


def read_series(path, keys: Optional[Sequence[str]] = None) -> dict[str, list[tuple[int, float]]]:
    """{logged key: [(step, value), ...] in step order} of one metrics.jsonl. keys: substrings of
    the series to keep (default: all). Learning rates, gradient norms and throughput are left out
    unless a key names them, and so are the counts of skipped steps.
    Pretraining's alignment accuracy (a fraction) comes back in percent like the other metrics."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(path):
        for key, value in record.items():
            if key == "step" or value is None:
                continue
            if keys is not None and not any(k in key for k in keys):
                continue
            if key.endswith(SKIPPED_SERIES) and not any(k in key.rsplit("/", 1)[-1] for k in keys or ()):
                continue  # drawn only when a key names them ("grad_norm")
            if key.endswith("alignment_accuracy"):
                value = 100.0 * value
            series.setdefault(key, []).append((record["step"], float(value)))
    return {key: sorted(points) for key, points in series.items()}


def split_key(key: str) -> tuple[Optional[str], str]:
    """(task, curve name) of a logged key: "val/VQA/accuracy" -> ("VQA", "val accuracy");
    "train/masked_lm" (pretraining: no task part) -> (None, "train masked_lm")."""
    parts = key.split("/")
    if len(parts) >= 3:
        return "/".join(parts[1:-1]), f"{parts[0]} {parts[-1]}"
    return None, key.replace("/", " ")


def curve_panels(logs: dict[str, Path], keys: Optional[Sequence[str]] = None,
                 compare: bool = False) -> dict[tuple[str, str], dict[str, list[tuple[int, float]]]]:
    """{(panel title, "loss" or "metric"): {curve label: points}} of plot_training_curves: a panel
    title per task of each run ("VQA (finetune)"; a run without tasks, like pretraining: its
    label), or per task alone with `compare` (the curve labels then name the run)."""
    panels: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = {}
    for label, path in logs.items():
        for key, points in sorted(read_series(path, keys).items()):
            task, curve = split_key(key)
            if compare:
                title, curve = task or "", f"{label}: {curve}"
            else:
                title = f"{task} ({label})" if task else label
            kind = "metric" if is_metric(key) else "loss"
            panels.setdefault((title, kind), {})[curve] = points
    return panels


def plot_training_curves(logs: dict[str, Path], output, keys: Optional[Sequence[str]] = None,
                         columns: int = 2, compare: bool = False) -> Path:
    """Training curves against the step: for each task of each run, a panel of its losses and,
    beside it, a panel of its metrics in percent, so that a run of several tasks does not draw
    ten curves over each other.

    logs: {run label: metrics.jsonl}. keys: substrings of the series to draw (read_series).
    columns: tasks side by side (each two panels wide). compare: one pair of panels per task
    holding every run's curves of it (labelled by run, one colour per run, validation dashed), e.g.
    the same task trained two ways.
    """
    panels = curve_panels(logs, keys, compare)
    run_colours = {label: f"C{i % 10}" for i, label in enumerate(logs)}
    titles = list(dict.fromkeys(title for title, _ in panels))
    if not titles:
        raise ValueError(f"no series to draw in {', '.join(str(p) for p in logs.values())}")
    cols = min(columns, len(titles))
    rows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * 2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for i, title in enumerate(titles):
        for j, kind in enumerate(("loss", "metric")):
            ax = axes[i // cols, 2 * (i % cols) + j]
            curves = panels.get((title, kind))
            if not curves:
                continue
            ax.set_axis_on()
            for curve, points in curves.items():
                steps, values = zip(*points)
                colour = run_colours[curve.split(": ")[0]] if compare else None
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, linewidth=1, label=curve,
                        linestyle="--" if curve.split(": ")[-1].startswith("val") else "-", color=colour)
            ax.set_title(f"{title}: {'losses' if kind == 'loss' else 'metrics'}" if title else kind, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("loss" if kind == "loss" else "%", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return output


def _load_model(path):
    from vilbert.model import ViLBertForVLTasks

    return ViLBertForVLTasks.from_pretrained(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vilbert.visualize", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grounding", help="boxes, a referring expression's region, a VQA answer's attention")
    g.add_argument("--image", required=True, help="the picture (any format PIL reads)")
    g.add_argument("--features", required=True, help="the feature store holding its regions")
    g.add_argument("--image_id", required=True, help="its key in the store")
    g.add_argument("--bert_model", help="tokenizer directory (needed with --expression or --question)")
    g.add_argument("--expression", help="a referring expression to ground (needs --refer_model)")
    g.add_argument("--refer_model", help="a checkpoint finetuned on RefCOCO+ (vision_logit head)")
    g.add_argument("--question", help="a question to answer (needs --vqa_model and --answers)")
    g.add_argument("--vqa_model", help="a checkpoint finetuned on VQA (vil_prediction head)")
    g.add_argument("--answers", help="the answer vocabulary: <dataroot>/cache/<train_split>_label2ans.json")
    g.add_argument("--vqa_image", help="ask the question about this picture instead")
    g.add_argument("--vqa_features", help="... whose regions are in this store")
    g.add_argument("--vqa_image_id", help="... under this key")
    g.add_argument("--max_regions", type=int, default=DEFAULT_MAX_REGIONS)
    g.add_argument("--output", required=True, help="PNG to write")
    c = commands.add_parser("curves", help="training curves from metrics.jsonl files")
    c.add_argument("--log", action="append", required=True, help="LABEL=path/to/metrics.jsonl (repeatable)")
    c.add_argument("--keys", nargs="*", help="substrings of the series to draw (default: losses and metrics)")
    c.add_argument("--compare", action="store_true", help="draw every run's curves of a task in the same panels")
    c.add_argument("--output", required=True, help="PNG to write")
    args = p.parse_args(argv)

    try:
        if args.command == "curves":
            logs = {}
            for item in args.log:
                label, sep, path = item.partition("=")
                if not sep:
                    label, path = Path(item).parent.parent.name, item
                logs[label] = Path(path)
            path = plot_training_curves(logs, args.output, args.keys, compare=args.compare)
        else:
            if (args.expression or args.question) and not args.bert_model:
                p.error("--bert_model is needed to read --expression or --question")
            if args.expression and not args.refer_model:
                p.error("--expression needs --refer_model")
            if args.question and not (args.vqa_model and args.answers):
                p.error("--question needs --vqa_model and --answers")
            tokenizer = None
            if args.bert_model:
                from vilbert.tokenization import load_tokenizer

                tokenizer = load_tokenizer(args.bert_model)
            answers = json.loads(Path(args.answers).read_text()) if args.answers else None
            path = grounding_figure(
                args.output, image=args.image, features=args.features, image_id=args.image_id, tokenizer=tokenizer,
                expression=args.expression, refer_model=_load_model(args.refer_model) if args.expression else None,
                question=args.question, vqa_model=_load_model(args.vqa_model) if args.question else None,
                answers=answers, vqa_image=args.vqa_image, vqa_features=args.vqa_features,
                vqa_image_id=args.vqa_image_id, max_regions=args.max_regions)
    except (OSError, ValueError, KeyError) as exc:
        print(f"python -m vilbert.visualize: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
