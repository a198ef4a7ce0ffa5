"""`python -m vilbert.demo check`: measurements on a written demo world.

- coverage: every image id named by every annotation file has a record in its feature store(s);
- probe: a logistic regression on the region features of the Conceptual Captions training pictures
  (ground-truth boxes) predicts each object's colour, shape and size on the validation pictures;
- VQA without the picture: majority answer, best answer per question template and a bag-of-words
  logistic regression, read back from the written files (the VQA numbers of CHANCE.json, recomputed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .captions import CONCAP_TSV, FLICKR_JSONLINE, concap_image_id
from .chance import linear_probe, vqa_rates, vqa_splits
from .vcr import feature_id
from .world import COLOURS, SHAPES, SIZES
from ..safe_pickle import safe_load

VQA_QUESTION_FILES = ("train2014", "val2014", "test2015", "test-dev2015")


def annotated_ids(data_dir) -> dict[str, set[str]]:
    """{feature store path (relative to data_dir): image ids (str) the annotation files name}."""
    root = Path(data_dir)
    out: dict[str, set[str]] = {}
    concap = root / "conceptual_captions"
    for split, name in (("train", "training"), ("val", "validation")):
        lines = (concap / CONCAP_TSV[split]).read_text(encoding="utf-8").splitlines()
        out[f"conceptual_captions/features/{name}.lmdb"] = {str(concap_image_id(line.split("\t")[1])) for line in lines}
    vqa_ids = set()
    for subtype in VQA_QUESTION_FILES:
        data = json.loads((root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json").read_text())
        vqa_ids |= {str(q["image_id"]) for q in data["questions"]}
    for subtype in ("train2014", "val2014"):
        data = json.loads((root / "vqa" / f"v2_mscoco_{subtype}_annotations.json").read_text())
        vqa_ids |= {str(a["image_id"]) for a in data["annotations"]}
    out["vqa/features/regions.lmdb"] = vqa_ids
    vcr_ids = set()
    for split in ("train", "val"):
        for line in (root / "vcr" / f"{split}.jsonl").read_text().splitlines():
            vcr_ids.add(str(feature_id(json.loads(line)["img_id"])))
    out["vcr/features/detections.lmdb"] = out["vcr/features/gt.lmdb"] = vcr_ids
    # The demo wrote this pickle itself, but --data may name a world from elsewhere: read it safely.
    refs = safe_load(root / "refcoco" / "refcoco+" / "refs(unc).p")
    instances = json.loads((root / "refcoco" / "refcoco+" / "instances.json").read_text())
    ref_ids = {str(r["image_id"]) for r in refs} | {str(im["id"]) for im in instances["images"]}
    out["refcoco/features/detections.lmdb"] = out["refcoco/features/gt.lmdb"] = ref_ids
    flickr_ids = set()
    for name in FLICKR_JSONLINE.values():
        for line in (root / "flickr30k" / name).read_text().splitlines():
            flickr_ids.add(Path(json.loads(line)["img_path"]).stem)
    out["flickr30k/features/regions.lmdb"] = flickr_ids
    return out


def missing_features(data_dir) -> dict[str, list[str]]:
    """{store: ids named by annotations but absent from the store} (empty lists when all is well)."""
    from vilbert.features import FeatureReader

    missing = {}
    for store, ids in annotated_ids(data_dir).items():
        have = set(FeatureReader(Path(data_dir) / store).image_ids())
        missing[store] = sorted(ids - have)
    return missing


def region_table(data_dir, store: str, max_boxes: int | None = None):
    """Features of the ground-truth boxes of a store with their objects' labels ->
    (X (N, D) float32, colour (N,), shape (N,), size (N,)). Checks each stored box against the
    scene's box, so a misaligned store fails loudly."""
    from vilbert.features import FeatureReader

    root = Path(data_dir)
    dataset = store.split("/")[0]
    scenes = json.loads((root / dataset / "scenes.json").read_text())
    reader = FeatureReader(root / store)
    rows, colours, shapes, sizes = [], [], [], []
    for image_id in sorted(reader.image_ids(), key=int):
        item = reader[image_id]
        objects = scenes[image_id]["objects"]
        truth = np.array([o["box"] for o in objects], dtype=np.float32)
        if item.boxes.shape != truth.shape or not np.allclose(item.boxes, truth, atol=0.01):
            raise ValueError(f"{store}: image {image_id}: stored boxes differ from scenes.json")
        rows.append(item.features[1:])
        colours += [COLOURS.index(o["color"]) for o in objects]
        shapes += [SHAPES.index(o["shape"]) for o in objects]
        sizes += [SIZES.index(o["size"]) for o in objects]
        if max_boxes is not None and len(colours) >= max_boxes:
            break
    return np.concatenate(rows), np.array(colours), np.array(shapes), np.array(sizes)


def probe(data_dir, train_store="conceptual_captions/features/training.lmdb",
          test_store="conceptual_captions/features/validation.lmdb", max_train_boxes: int = 3000) -> dict:
    """Linear-probe accuracy (percent) of colour, shape and size from region features."""
    train = region_table(data_dir, train_store, max_train_boxes)
    test = region_table(data_dir, test_store)
    out = {"train_boxes": int(len(train[0])), "test_boxes": int(len(test[0]))}
    for k, (name, classes) in enumerate((("color", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES)))):
        out[name] = round(100.0 * linear_probe(train[0], train[k + 1], test[0], test[k + 1], classes), 2)
    return out


def vqa_without_picture(data_dir) -> dict:
    """Majority-answer, template-prior and bag-of-words (question only) soft accuracy on minval, in
    percent, from the written files (the VQA rates of CHANCE.json, recomputed)."""
    root = Path(data_dir) / "vqa"
    load = lambda name, key: json.loads((root / name).read_text())[key]  # noqa: E731
    splits = []
    for subtype in ("train2014", "val2014"):
        questions = load(f"v2_OpenEnded_mscoco_{subtype}_questions.json", "questions")
        by_id = {a["question_id"]: a for a in load(f"v2_mscoco_{subtype}_annotations.json", "annotations")}
        splits.append((questions, [by_id[q["question_id"]] for q in questions]))
    rates = vqa_rates(*splits)
    rates["minval_questions"] = len(vqa_splits(*splits[1])[1])
    return rates


def main(data_dir) -> int:
    report = {}
    missing = missing_features(data_dir)
    report["missing_features"] = {store: len(ids) for store, ids in missing.items()}
    report["probe"] = probe(data_dir)
    report["vqa_without_picture"] = vqa_without_picture(data_dir)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "data/demo"))
