"""What vilbert.predict returns (dataclasses, plain values: the web page of issue 15 serialises
them with `to_jsonable`), the terminal table and the picture.

Every result names its picture (ImageInfo) and where the answer came from (Source: checkpoint,
head, task token, seconds); with `attention=True` it carries the text-to-region co-attention maps
(AttentionMap: layers x heads x tokens x regions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from vilbert.predict.errors import PredictError

@dataclass
class ImageInfo:
    image_id: str
    path: Optional[str]
    width: int
    height: int
    regions: int  # boxes given to the model (the global region not counted)
    features: str  # "extracted", "cached" or "store"


@dataclass
class Source:
    """Which checkpoint and head answered, with which task token, and how long it took (seconds:
    features = reading or extracting this picture's regions, model = the whole call's forward
    passes, total = the call)."""

    checkpoint: str
    head: str  # vil_prediction, vision_logit, vil_logit or alignment
    task_token: Optional[int]
    seconds: dict


@dataclass
class AttentionMap:
    """Text-to-region co-attention of one (text, picture) pair: for each co-attention block
    (layer) and head, each text position's attention over the regions (rows sum to 1).
    Region 0 is the whole picture; boxes are pixels x1, y1, x2, y2."""

    tokens: list  # [CLS], [TASK n] (12-in-1), word pieces, [SEP]
    boxes: list  # (regions, 4)
    text_to_region: np.ndarray  # (layers, heads, tokens, regions) float32

    def token_index(self, word: Union[str, int] = "[CLS]") -> int:
        """A text position: an index, or the first token equal to `word` (case-insensitive; a word
        cut into pieces is found by its first piece)."""
        if isinstance(word, int) or (isinstance(word, str) and word.lstrip("-").isdigit()):
            index = int(word)
            if not -len(self.tokens) <= index < len(self.tokens):
                raise PredictError(f"token index {index} is out of range: the text has {len(self.tokens)} tokens")
            return index % len(self.tokens)
        lowered = [t.lower() for t in self.tokens]
        target = word.lower()
        for i, token in enumerate(lowered):
            if token == target or (target.startswith(token) and i + 1 < len(lowered) and lowered[i + 1].startswith("##")):
                return i
        raise PredictError(f"{word!r} is not a token of the text ({' '.join(self.tokens)})")

    def over_regions(self, word: Union[str, int] = "[CLS]", layer: int = -1, head: Optional[int] = None) -> np.ndarray:
        """(regions,) attention of one token over the regions in one co-attention block; the mean
        over heads unless `head` is given."""
        maps = self.text_to_region
        if not -maps.shape[0] <= layer < maps.shape[0]:
            raise PredictError(f"--layer {layer}: the model has {maps.shape[0]} co-attention blocks")
        if head is not None and not -maps.shape[1] <= head < maps.shape[1]:
            raise PredictError(f"--head {head}: the co-attention has {maps.shape[1]} heads")
        rows = maps[layer, :, self.token_index(word)]  # (heads, regions)
        return rows.mean(axis=0) if head is None else rows[head]


@dataclass
class Answer:
    answer: str
    label: int
    probability: float  # softmax over the vocabulary
    score: float  # sigmoid: the head's estimate of the answer's VQA soft score


@dataclass
class AnswerResult:
    question: str
    image: ImageInfo
    answers: list  # of Answer, best first
    source: Source
    attention: Optional[AttentionMap] = None


@dataclass
class Region:
    index: int  # row of the model's regions; 0 = the whole picture
    box: list  # x1, y1, x2, y2 pixels
    probability: float  # softmax of vision_logit over the picture's regions
    logit: float


@dataclass
class GroundingResult:
    expression: str
    image: ImageInfo
    best: Region
    runners_up: list  # of Region, next best first
    source: Source
    attention: Optional[AttentionMap] = None


@dataclass
class CaptionScore:
    caption: str
    score: float  # alignment: P(aligned); retrieval: the vil_logit
    probability: float  # alignment: P(aligned); retrieval: softmax of the logits over the captions given
    rank: int  # 1 = the best fitting of the captions given
    attention: Optional[AttentionMap] = None


@dataclass
class AlignmentResult:
    image: ImageInfo
    captions: list  # of CaptionScore, in the order given
    source: Source


def to_jsonable(value, attention: bool = True):
    """Results as plain JSON values (floats rounded to 6 digits); attention maps only if asked."""
    if isinstance(value, AttentionMap):
        if not attention:
            return None
        return {"tokens": value.tokens, "boxes": to_jsonable(value.boxes),
                "text_to_region": np.round(value.text_to_region, 5).tolist()}
    if dataclasses.is_dataclass(value):
        return {f.name: to_jsonable(getattr(value, f.name), attention) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_jsonable(v, attention) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, attention) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), attention)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def describe_checkpoint(info) -> str:
    """One line: the CheckpointInfo of vilbert.predict.checkpoint, readable."""
    kind = "our directory" if info.format == "vilbert" else "a released checkpoint"
    trained = f", kept as the best for {info.trained_for}" if info.trained_for else ""
    return (f"checkpoint {info.path} ({kind}: {info.model_class}{trained}; heads: {', '.join(info.heads) or 'none'}"
            f"{'; task tokens' if info.task_tokens else ''})")


def format_results(results: list, mode: str) -> str:
    """The readable table of one CLI call (markdown tables, as the other scripts print)."""
    lines = []
    for result in results:
        image, source = result.image, result.source
        token = "" if source.task_token is None else f", task token {source.task_token}"
        lines.append(f"\nimage {image.path or image.image_id}: {image.width}x{image.height}, {image.regions} regions "
                     f"({image.features}, {source.seconds['features']:.2f} s); head {source.head}{token}; "
                     f"model {source.seconds['model']:.2f} s")
        if mode == "question":
            lines += [f"Q: {result.question}", "", "| rank | answer | probability | score |", "|---|---|---|---|"]
            lines += [f"| {k} | {a.answer} | {a.probability:.3f} | {a.score:.3f} |" for k, a in enumerate(result.answers, 1)]
        elif mode == "expression":
            lines += [f"expression: {result.expression}", "", "| rank | region | box (x1, y1, x2, y2) | probability |",
                      "|---|---|---|---|"]
            for k, region in enumerate([result.best] + result.runners_up, 1):
                name = f"{region.index} (whole picture)" if region.index == 0 else str(region.index)
                box = ", ".join(f"{v:.1f}" for v in region.box)
                lines.append(f"| {k} | {name} | {box} | {region.probability:.3f} |")
        else:
            what = "P(aligned)" if source.head == "alignment" else "vil_logit"
            lines += ["", f"| rank | caption | {what} | probability |", "|---|---|---|---|"]
            lines += [f"| {c.rank} | {c.caption} | {c.score:.3f} | {c.probability:.3f} |"
                      for c in sorted(result.captions, key=lambda c: c.rank)]
    return "\n".join(lines).lstrip("\n")


def draw_results(results: list, output, *, word: Union[str, int] = "[CLS]", layer: int = -1,
                 head: Optional[int] = None) -> Path:
    """One panel per picture: for an expression, the chosen region (red) and the runners-up
    (faint, by probability); for a question or captions, the co-attention of `word` over the
    regions (box opacity; the best caption's). Results must carry attention maps for the latter."""
    import matplotlib.pyplot as plt

    from vilbert.visualize import draw_boxes

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.8), squeeze=False, layout="constrained")
    for ax, result in zip(axes[0], results):
        image = result.image
        if image.path:
            from PIL import Image

            with Image.open(image.path) as picture:
                ax.imshow(picture.convert("RGB"), interpolation="nearest")
        else:  # stored features without the picture: the boxes on a blank canvas of its size
            ax.imshow(np.full((image.height, image.width, 3), 255, dtype=np.uint8))
        ax.set_axis_off()
        if isinstance(result, GroundingResult):
            regions = [result.best] + result.runners_up
            boxes = np.array([r.box for r in regions])
            draw_boxes(ax, boxes[1:], weights=np.array([r.probability for r in regions[1:]]), color="orange")
            draw_boxes(ax, boxes[:1], highlight=0, linewidth=0)
            title = f'"{result.expression}"\nregion {result.best.index} (p = {result.best.probability:.2f})'
        else:
            if isinstance(result, AnswerResult):
                attention, text = result.attention, result.question
                title = f"Q: {text}\nA: " + ", ".join(f"{a.answer} {a.probability:.2f}" for a in result.answers[:3])
            else:
                best = min(result.captions, key=lambda c: c.rank)
                attention, text = best.attention, best.caption
                title = f'"{text}"\n{"P(aligned)" if result.source.head == "alignment" else "score"} {best.score:.2f}'
            if attention is None:
                raise PredictError("drawing co-attention needs the attention maps: predict with attention=True")
            weights = attention.over_regions(word, layer, head)
            index = attention.token_index(word)
            draw_boxes(ax, np.array(attention.boxes[1:]), weights=weights[1:], color="cyan", linewidth=2.5)
            title += f"\nattention of {attention.tokens[index]!r} (whole picture {weights[0]:.2f})"
        ax.set_title(title, fontsize=8)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return output
