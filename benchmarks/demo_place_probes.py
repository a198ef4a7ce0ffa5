"""Does a demo model read places? Two probes on the demo world (docs/DEMO.md, "What limits VQA").

    python benchmarks/demo_place_probes.py words   --data data/demo --checkpoint results/demo/runs/pretrain/checkpoints/step-1500
    python benchmarks/demo_place_probes.py regions --data data/demo --checkpoint results/demo/runs/<run>/best/VQA

words: masked-word prediction of a pretraining checkpoint on the Conceptual Captions captions that
  name a quadrant ("a large yellow cross in the top left"): each caption once with "top"/"bottom"
  masked, once with "left"/"right", once with the object's colour, and the share of captions where
  the model scores the true word above the others of its group (chance 50, 50, 12.5); and on the
  captions that relate two objects ("a red circle to the right of a blue square"), the relation word
  masked, scored against its opposite ("left"/"right", "above"/"below"). In the demo world the first
  object of such a caption is always the left or upper one, so that word follows from the other
  words; chance is 50 only in a world where both directions occur (the trial world of docs/DEMO.md,
  session 8). Training and validation captions apart.
regions: logistic regressions (vilbert.demo.chance.linear_probe, as `python -m vilbert.demo check`)
  that read a VQA picture's object's grid row and column (4 classes each) from its region feature,
  the model's region embedding, and its last visual layer (the question "where is it?"); 3/4 of the
  objects to fit, 1/4 to score.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilbert.demo.chance import linear_probe  # noqa: E402
from vilbert.features import FeatureReader, pad_regions  # noqa: E402
from vilbert.tokenization import load_tokenizer  # noqa: E402

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
_QUADRANT = re.compile(r" in the (top|bottom) (left|right)$")
_RELATION = re.compile(r" (?:to the (left|right) of|(above|below)) ")
_OPPOSITES = {"left": ("left", "right"), "right": ("left", "right"), "above": ("above", "below"),
              "below": ("above", "below")}


def regions_of(reader: FeatureReader, image_id) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, R, D) features, (1, R, 5) locations, (1, R) mask of one picture, as the readers pad it."""
    padded = pad_regions(reader[str(image_id)], 8)
    return (torch.from_numpy(padded.features)[None], torch.from_numpy(padded.locations)[None],
            torch.from_numpy(padded.mask)[None])


def word_probe(data: Path, checkpoint: str, bert: str) -> None:
    from vilbert.model import ViLBertForPretraining

    model = ViLBertForPretraining.from_pretrained(checkpoint).eval()
    tokenizer = load_tokenizer(bert)
    folder = data / "conceptual_captions"
    for split, tsv in (("training", "Train_GCC-training.tsv"), ("validation", "Validation_GCC-1.1.0-Validation.tsv")):
        reader = FeatureReader(folder / "features" / f"{split}.lmdb")
        hits: dict[str, list[bool]] = {"top/bottom": [], "left/right": [], "colour": [], "relation": []}
        for line in (folder / tsv).read_text().splitlines():
            caption, url = line.split("\t")
            relation = _RELATION.search(caption)
            if not _QUADRANT.search(caption) and not relation:
                continue
            features, locations, mask = regions_of(reader, zlib.crc32(url.encode()) & 0xFFFFFFFF)
            words = caption.split()
            if relation:
                word = relation.group(1) or relation.group(2)
                masks = [("relation", words.index(word), _OPPOSITES[word])]
            else:
                colour = next(i for i, w in enumerate(words) if w in COLOURS)
                masks = [("top/bottom", len(words) - 2, ("top", "bottom")),
                         ("left/right", len(words) - 1, ("left", "right")), ("colour", colour, COLOURS)]
            for name, index, group in masks:
                masked = words[:index] + [tokenizer.mask_token] + words[index + 1:]
                encoded = tokenizer([" ".join(masked)], return_tensors="pt")
                with torch.no_grad():
                    scores = model(encoded["input_ids"], features, locations, None, encoded["attention_mask"],
                                   mask).prediction_scores_t[0]  # (T, vocab)
                position = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0])
                candidates = scores[position, tokenizer.convert_tokens_to_ids(list(group))]
                hits[name].append(group[int(candidates.argmax())] == words[index])
        print(f"{split} captions naming a quadrant ({len(hits['colour'])}): "
              + ", ".join(f"{k} {100 * np.mean(v):.1f}%" for k, v in hits.items() if k != "relation")
              + f"; relating two objects ({len(hits['relation'])}): relation word "
              + (f"{100 * np.mean(hits['relation']):.1f}%" if hits["relation"] else "-"))


def region_probe(data: Path, checkpoint: str, bert: str) -> None:
    from vilbert.model import ViLBertForVLTasks

    model = ViLBertForVLTasks.from_pretrained(checkpoint).eval()
    tokenizer = load_tokenizer(bert)
    reader = FeatureReader(data / "vqa" / "features" / "regions.lmdb")
    scenes = json.loads((data / "vqa" / "scenes.json").read_text())
    question = tokenizer(["where is it?"], return_tensors="pt")
    rows: dict[str, list] = {"feature": [], "region embedding": [], "last visual layer": []}
    grid_row, grid_col = [], []
    for image_id in reader.image_ids():
        features, locations, mask = regions_of(reader, image_id)
        with torch.no_grad():
            embedded = model.vilbert.region_embeddings(features, locations)
            visual = model.vilbert(question["input_ids"], features, locations, None, question["attention_mask"],
                                   mask).sequence_output_v
        for k, obj in enumerate(scenes[str(image_id)]["objects"]):  # region k + 1 is object k (gt boxes)
            rows["feature"].append(features[0, k + 1].numpy())
            rows["region embedding"].append(embedded[0, k + 1].float().numpy())
            rows["last visual layer"].append(visual[0, k + 1].float().numpy())
            grid_row.append(obj["grid_row"])
            grid_col.append(obj["grid_col"])
    fit = int(0.75 * len(grid_row))
    for name, x in rows.items():
        x = np.stack(x)
        row, col = (100 * linear_probe(x[:fit], y[:fit], x[fit:], y[fit:], 4)
                    for y in (np.array(grid_row), np.array(grid_col)))
        print(f"{name}: grid row {row:.1f}%, grid column {col:.1f}% ({len(x) - fit} objects scored; chance 25%)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("probe", choices=("words", "regions"))
    p.add_argument("--data", default="data/demo", help="the demo world")
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (words) or a finetuned VQA one (regions)")
    p.add_argument("--bert_model", default=None, help="tokenizer (default: the offline MiniLM)")
    args = p.parse_args(argv)
    if args.bert_model is None:
        from vilbert.offline import minilm_path

        args.bert_model = str(minilm_path())
    probe = word_probe if args.probe == "words" else region_probe
    probe(Path(args.data), args.checkpoint, args.bert_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
