"""`python -m vilbert.demo make-world`: write the whole demo world to a folder.

Layout under OUTPUT (every dataset in its real format; see docs/DEMO.md for the full description):

    world.json  CHANCE.json  vlbert_tasks.yml
    conceptual_captions/  Train_GCC-training.tsv  Validation_GCC-1.1.0-Validation.tsv
                          images/{training,validation}/<id>.png   boxes_{training,validation}.json
                          features/{training,validation}.lmdb      scenes.json
    vqa/                  v2_OpenEnded_mscoco_{train2014,val2014,test2015,test-dev2015}_questions.json
                          v2_mscoco_{train2014,val2014}_annotations.json
                          images/<coco id>.png  boxes.json  features/regions.lmdb  scenes.json
    vcr/                  train.jsonl  val.jsonl  vcr1images/demo_world/<key>.{png,json}
                          boxes_{gt,detections}.json  features/{gt,detections}.lmdb  scenes.json
    refcoco/              refcoco+/refs(unc).p  refcoco+/instances.json  images/<coco id>.png
                          boxes_{gt,detections}.json  features/{gt,detections}.lmdb  scenes.json
    flickr30k/            all_data_final_{train,val_set0,test_set0}_2014.jsonline  images/<id>.png
                          boxes.json  features/regions.lmdb  hard_negative.json  scenes.json

`scenes.json` in each folder is the world's ground truth ({feature-store key: scene}), for tests,
probes and pictures; no reader needs it. Each dataset draws from its own random stream
(numpy Generator seeded with [seed, stream]), so files are byte-identical for a seed.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from . import captions, chance, refcoco, vcr, vqa
from .world import COLOURS, NUM_CLASSES, SHAPES, SIZES, Scene, class_names, detections, ground_truth_posteriors, render, sample_scene

GENERATOR_VERSION = 2  # 2: VQA answers balanced per question template
# Random streams, one per part of the world: adding a dataset never changes the others.
STREAMS = {"ids": 0, "concap": 1, "vqa": 2, "vcr": 3, "refcoco": 4, "flickr": 5, "vqa_questions": 6}
ENTRIES = ("world.json", "CHANCE.json", "vlbert_tasks.yml", "conceptual_captions", "vqa", "vcr", "refcoco", "flickr30k",
           # the 12-in-1 part (vilbert.demo.twelve, --twelve)
           "vilbert_tasks.yml", "nlvr2", "visual_entailment", "gqa", "visual_genome", "Foil", "cocoRetrieval",
           "visual7w", "guesswhat", "visual_dialog")


@dataclass(frozen=True)
class WorldSize:
    """Pictures per split (questions/expressions per picture are fixed)."""

    concap_train: int
    concap_val: int
    vqa_train: int
    vqa_val: int
    vqa_test: int
    vcr_train: int
    vcr_val: int
    refcoco_train: int
    refcoco_val: int
    refcoco_testA: int
    refcoco_testB: int
    flickr_train: int
    flickr_val: int
    flickr_test: int
    vqa_questions_per_image: int = 5
    vcr_questions_per_image: int = 2
    refs_per_image: int = 2
    sentences_per_ref: int = 2


SMALL = WorldSize(
    concap_train=2000, concap_val=200,
    vqa_train=400, vqa_val=100, vqa_test=50,
    vcr_train=600, vcr_val=150,
    refcoco_train=400, refcoco_val=100, refcoco_testA=50, refcoco_testB=50,
    flickr_train=500, flickr_val=100, flickr_test=100,
)
# Ten times `small`, except the Flickr30k val/test splits: retrieval is scored over 100 pictures
# in both sizes, so its chance rate (1/100) and its numbers compare across sizes.
MEDIUM = WorldSize(
    concap_train=20000, concap_val=2000,
    vqa_train=4000, vqa_val=1000, vqa_test=500,
    vcr_train=6000, vcr_val=1500,
    refcoco_train=4000, refcoco_val=1000, refcoco_testA=500, refcoco_testB=500,
    flickr_train=5000, flickr_val=100, flickr_test=100,
)
WORLD_SIZES = {"small": SMALL, "medium": MEDIUM}

# The task file's entries (the originals' field names, REFERENCE 5); sizes fit the demo world:
# at most 5 objects per picture, so few regions, and short texts (tests check every text fits).
TASKS = {
    "TASK1": dict(
        name="VQA", type="VL-classifier", loss="BCEWithLogitLoss", task_id=1, dataroot="vqa",
        features_h5path1="vqa/features/regions.lmdb", features_h5path2="",
        train_annotations_jsonpath="", val_annotations_jsonpath="",
        max_seq_length=16, max_region_num=8, batch_size=32, eval_batch_size=128,
        train_split="trainval", val_split="minval", lr=0.0001, num_epoch=10,
    ),
    "TASK6": dict(
        name="VCR_Q-A", type="VL-logit", loss="CrossEntropyLoss", task_id=6, dataroot="vcr",
        features_h5path1="vcr/features/detections.lmdb", features_h5path2="vcr/features/gt.lmdb",
        train_annotations_jsonpath="vcr/train.jsonl", val_annotations_jsonpath="vcr/val.jsonl",
        max_seq_length=24, max_region_num=24, batch_size=16, eval_batch_size=64,
        train_split="train", val_split="val", lr=0.0001, num_epoch=10,
    ),
    "TASK7": dict(
        name="VCR_QA-R", type="VL-logit", loss="CrossEntropyLoss", task_id=7, dataroot="vcr",
        features_h5path1="vcr/features/detections.lmdb", features_h5path2="vcr/features/gt.lmdb",
        train_annotations_jsonpath="vcr/train.jsonl", val_annotations_jsonpath="vcr/val.jsonl",
        max_seq_length=36, max_region_num=24, batch_size=16, eval_batch_size=64,
        train_split="train", val_split="val", lr=0.0001, num_epoch=10,
    ),
    "TASK9": dict(
        name="RetrievalFlickr30k", type="VL-logit", loss="CrossEntropyLoss", task_id=9, dataroot="flickr30k",
        features_h5path1="flickr30k/features/regions.lmdb", features_h5path2="",
        train_annotations_jsonpath="flickr30k/all_data_final_train_2014.jsonline",
        val_annotations_jsonpath="flickr30k/all_data_final_test_set0_2014.jsonline",
        max_seq_length=32, max_region_num=8, batch_size=16, eval_batch_size=128,
        train_split="train", val_split="test", lr=0.0001, num_epoch=10,
    ),
    "TASK11": dict(
        name="refcoco+", type="V-logit", loss="BCEWithLogitLoss", task_id=11, dataroot="refcoco",
        features_h5path1="refcoco/features/detections.lmdb", features_h5path2="refcoco/features/gt.lmdb",
        train_annotations_jsonpath="", val_annotations_jsonpath="",
        max_seq_length=12, max_region_num=24, batch_size=32, eval_batch_size=128,
        train_split="train", val_split="val", lr=0.0001, num_epoch=10,
    ),
}
TASKS_HEADER = """\
# The demo world's task file (python -m vilbert.demo make-world): pass it as --tasks_config.
# Field names are the originals' (vilbert_tasks.yml); relative paths are resolved against the
# directory of this file. Sizes fit the demo: at most 5 objects per picture, short texts.
"""


def _write_json(path: Path, data, indent=None) -> None:
    """Deterministic JSON: sorted keys, fixed separators, UTF-8, final newline."""
    separators = (",", ": ") if indent else (",", ":")
    path.write_text(json.dumps(data, sort_keys=True, indent=indent, separators=separators, ensure_ascii=False) + "\n", encoding="utf-8")


def _jsonl_text(records) -> str:
    """Deterministic JSON lines: sorted keys, fixed separators, one record a line."""
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)


def _write_jsonl(path: Path, records) -> None:
    path.write_text(_jsonl_text(records), encoding="utf-8")


def _unique_ids(rng: np.random.Generator, low: int, high: int, count: int) -> list[int]:
    """`count` distinct ints from [low, high), in the order drawn."""
    seen, out = set(), []
    while len(out) < count:
        for v in rng.integers(low, high, size=count - len(out)):
            if int(v) not in seen:
                seen.add(int(v))
                out.append(int(v))
    return out


class _Pictures:
    """Renders scenes into an images folder and collects the boxes files for the extractor."""

    def __init__(self, images_dir: Path, rng: np.random.Generator | None, with_detections: bool = False):
        self.images_dir = images_dir
        self.rng = rng
        self.with_detections = with_detections
        self.gt: dict[str, dict] = {}
        self.detected: dict[str, dict] = {}
        self.scenes: dict[str, dict] = {}
        images_dir.mkdir(parents=True, exist_ok=True)

    def add(self, key, scene: Scene, posteriors: np.ndarray | None = None) -> np.ndarray:
        """Render and record one picture; returns the ground-truth posteriors (n, NUM_CLASSES),
        drawn here unless given."""
        key = str(key)
        render(scene).save(self.images_dir / f"{key}.png", format="PNG")
        if posteriors is None:
            posteriors = ground_truth_posteriors(self.rng, scene)
        self.gt[key] = {"boxes": scene.boxes().tolist(), "cls_prob": np.round(posteriors, 5).tolist()}
        if self.with_detections:
            boxes, probs = detections(self.rng, scene)
            self.detected[key] = {"boxes": boxes.tolist(), "cls_prob": np.round(probs, 5).tolist()}
        self.scenes[key] = scene.to_json()
        return posteriors


def _extract(images_dir: Path, boxes_file: Path, store: Path, progress: bool) -> None:
    from vilbert.features.extract import run_extraction

    result = run_extraction(images_dir, store, boxes="gt", boxes_file=boxes_file, backbone="pixels", progress=progress)
    if result.failed or result.without_boxes:
        raise RuntimeError(f"extraction into {store} skipped images: {result.failed[:3]} {result.without_boxes[:3]}")


def _hard_negatives(folder: Path) -> None:
    """flickr30k/hard_negative.json for retrieval training (what `python -m vilbert.data.retrieval
    pool` writes), with paths relative to the folder so the file does not depend on where the
    world lives."""
    from vilbert.data.retrieval import HARD_NEGATIVE_FILE, build_hard_negatives

    annotations = captions.FLICKR_JSONLINE["train"]
    pool = build_hard_negatives(folder / annotations, folder / "features" / "regions.lmdb")
    pool.update(annotations=annotations, features="features/regions.lmdb")
    _write_json(folder / HARD_NEGATIVE_FILE, pool)


def _make_concap(root: Path, size: WorldSize, seed: int, say) -> dict:
    rng = np.random.default_rng([seed, STREAMS["concap"]])
    folder = root / "conceptual_captions"
    taken: set[int] = set()
    counts, jobs, scenes = {}, [], {}
    for split, count, name in (("train", size.concap_train, "training"), ("val", size.concap_val, "validation")):
        pictures = _Pictures(folder / "images" / name, rng)
        lines = []
        for url, image_id in captions.concap_urls(split, count, taken):
            scene = sample_scene(rng)
            pictures.add(image_id, scene)
            lines.append((captions.concap_caption(rng, scene), url))
        (folder / captions.CONCAP_TSV[split]).write_text(captions.concap_tsv(lines), encoding="utf-8")
        _write_json(folder / f"boxes_{name}.json", pictures.gt)
        scenes.update(pictures.scenes)
        jobs.append((pictures.images_dir, folder / f"boxes_{name}.json", folder / "features" / f"{name}.lmdb"))
        counts[split] = {"images": count, "captions": count}
    _write_json(folder / "scenes.json", scenes)
    say(f"conceptual_captions: {counts}")
    return {"counts": counts, "jobs": jobs}


VQA_SPLITS = ("train2014", "val2014", "test2015")


def vqa_splits(seed: int, size: WorldSize, coco_ids: list[int]):
    """The VQA splits without their pictures: yields (subtype, image ids, scenes, ground-truth
    posteriors, (questions, annotations, kinds)) for train2014, val2014 and test2015."""
    rng = np.random.default_rng([seed, STREAMS["vqa"]])
    # Questions draw from their own stream, so changing how they are asked leaves the pictures be.
    question_rng = np.random.default_rng([seed, STREAMS["vqa_questions"]])
    start = 0
    for subtype, count in zip(VQA_SPLITS, (size.vqa_train, size.vqa_val, size.vqa_test)):
        ids = sorted(coco_ids[start : start + count])
        start += count
        scenes = [sample_scene(rng) for _ in ids]
        posteriors = [ground_truth_posteriors(rng, scene) for scene in scenes]
        yield subtype, ids, scenes, posteriors, vqa.build_vqa_split(question_rng, scenes, ids, size.vqa_questions_per_image)


def _make_vqa(root: Path, size: WorldSize, seed: int, coco_ids: list[int], say) -> dict:
    folder = root / "vqa"
    pictures = _Pictures(folder / "images", rng=None)
    counts, files = {}, {}
    for subtype, ids, scenes, posteriors, (questions, annotations, kinds) in vqa_splits(seed, size, coco_ids):
        for image_id, scene, probs in zip(ids, scenes, posteriors):
            pictures.add(image_id, scene, probs)
        _write_json(folder / f"v2_OpenEnded_mscoco_{subtype}_questions.json", vqa.questions_file(questions, subtype))
        if subtype == "test2015":
            # test-dev is a subset of test-std's pictures (the first half here), as the official split.
            dev_ids = set(ids[: (len(ids) + 1) // 2])
            dev = [q for q in questions if q["image_id"] in dev_ids]
            _write_json(folder / "v2_OpenEnded_mscoco_test-dev2015_questions.json", vqa.questions_file(dev, "test-dev2015"))
            counts["test-dev2015"] = {"images": len(dev_ids), "questions": len(dev)}
        else:
            _write_json(folder / f"v2_mscoco_{subtype}_annotations.json", vqa.annotations_file(annotations, subtype))
            files[subtype] = (questions, annotations, kinds)
        counts[subtype] = {"images": len(ids), "questions": len(questions)}
    _write_json(folder / "boxes.json", pictures.gt)
    _write_json(folder / "scenes.json", pictures.scenes)
    say(f"vqa: {counts}")
    return {"counts": counts, "files": files, "jobs": [(pictures.images_dir, folder / "boxes.json", folder / "features" / "regions.lmdb")]}


def _make_vcr(root: Path, size: WorldSize, seed: int, say) -> dict:
    rng = np.random.default_rng([seed, STREAMS["vcr"]])
    folder = root / "vcr"
    pictures = _Pictures(folder / "vcr1images" / vcr.MOVIE, rng, with_detections=True)
    counts = {}
    for split, count in (("train", size.vcr_train), ("val", size.vcr_val)):
        scenes = [sample_scene(rng, unique_shapes=True) for _ in range(count)]
        for number, scene in enumerate(scenes):
            key = vcr.feature_id(f"{split}-{number}")
            posteriors = pictures.add(key, scene)
            scores = posteriors.max(axis=1)
            _write_json(pictures.images_dir / f"{key}.json", vcr.metadata(scene, scores))
        records = vcr.build_vcr_split(rng, scenes, split, size.vcr_questions_per_image)
        _write_jsonl(folder / f"{split}.jsonl", records)
        counts[split] = {"images": count, "annotations": len(records)}
    _write_json(folder / "boxes_gt.json", pictures.gt)
    _write_json(folder / "boxes_detections.json", pictures.detected)
    _write_json(folder / "scenes.json", pictures.scenes)
    say(f"vcr: {counts}")
    jobs = [
        (pictures.images_dir, folder / "boxes_detections.json", folder / "features" / "detections.lmdb"),
        (pictures.images_dir, folder / "boxes_gt.json", folder / "features" / "gt.lmdb"),
    ]
    return {"counts": counts, "jobs": jobs}


def _make_refcoco(root: Path, size: WorldSize, seed: int, coco_ids: list[int], say) -> dict:
    rng = np.random.default_rng([seed, STREAMS["refcoco"]])
    folder = root / "refcoco"
    pictures = _Pictures(folder / "images", rng, with_detections=True)
    scenes_by_split, ids_by_split, start = {}, {}, 0
    for split, count in (("train", size.refcoco_train), ("val", size.refcoco_val),
                         ("testA", size.refcoco_testA), ("testB", size.refcoco_testB)):
        ids = sorted(coco_ids[start : start + count])
        start += count
        scenes = [sample_scene(rng, min_objects=3, repeat_prob=0.5) for _ in ids]
        for image_id, scene in zip(ids, scenes):
            pictures.add(image_id, scene)
        scenes_by_split[split], ids_by_split[split] = scenes, ids
    refs, instances = refcoco.build_refcoco(rng, scenes_by_split, ids_by_split, size.refs_per_image, size.sentences_per_ref)
    (folder / "refcoco+").mkdir(parents=True, exist_ok=True)
    # Protocol 2, as the refer toolkit's file; plain dicts, lists, str and int only.
    (folder / "refcoco+" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    _write_json(folder / "refcoco+" / "instances.json", instances)
    _write_json(folder / "boxes_gt.json", pictures.gt)
    _write_json(folder / "boxes_detections.json", pictures.detected)
    _write_json(folder / "scenes.json", pictures.scenes)
    counts = {
        split: {"images": len(ids_by_split[split]), "refs": sum(r["split"] == split for r in refs),
                "sentences": sum(len(r["sentences"]) for r in refs if r["split"] == split)}
        for split in scenes_by_split
    }
    say(f"refcoco+: {counts}")
    jobs = [
        (pictures.images_dir, folder / "boxes_detections.json", folder / "features" / "detections.lmdb"),
        (pictures.images_dir, folder / "boxes_gt.json", folder / "features" / "gt.lmdb"),
    ]
    return {"counts": counts, "refs": refs, "instances": instances, "detected": pictures.detected, "jobs": jobs}


def _make_flickr(root: Path, size: WorldSize, seed: int, flickr_ids: list[int], say) -> dict:
    rng = np.random.default_rng([seed, STREAMS["flickr"]])
    folder = root / "flickr30k"
    pictures = _Pictures(folder / "images", rng)
    counts, start = {}, 0
    for split, count in (("train", size.flickr_train), ("val", size.flickr_val), ("test", size.flickr_test)):
        ids = sorted(flickr_ids[start : start + count])
        start += count
        records = []
        for image_id in ids:
            scene = sample_scene(rng)
            pictures.add(image_id, scene)
            records.append(captions.flickr_record(rng, scene, image_id))
        _write_jsonl(folder / captions.FLICKR_JSONLINE[split], records)
        counts[split] = {"images": count, "captions": 5 * count}
    _write_json(folder / "boxes.json", pictures.gt)
    _write_json(folder / "scenes.json", pictures.scenes)
    say(f"flickr30k: {counts}")
    return {"counts": counts, "jobs": [(pictures.images_dir, folder / "boxes.json", folder / "features" / "regions.lmdb")]}


def _read_world_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def world_ids(seed: int, size: WorldSize) -> tuple[list[int], list[int], list[int]]:
    """Image ids of the world: (VQA COCO ids, RefCOCO+ COCO ids, Flickr30k ids), disjoint."""
    ids_rng = np.random.default_rng([seed, STREAMS["ids"]])
    coco_needed = (size.vqa_train + size.vqa_val + size.vqa_test + size.refcoco_train
                   + size.refcoco_val + size.refcoco_testA + size.refcoco_testB)
    coco_ids = _unique_ids(ids_rng, 1, 600000, coco_needed)
    flickr_ids = _unique_ids(ids_rng, 1000000, 2**31 - 1, size.flickr_train + size.flickr_val + size.flickr_test)
    vqa_images = size.vqa_train + size.vqa_val + size.vqa_test
    return coco_ids[:vqa_images], coco_ids[vqa_images:], flickr_ids


def _twelve_size(twelve, size):
    """The TwelveSize of make_world's `twelve` argument (None when off)."""
    if not twelve:
        return None
    from .twelve import TWELVE_SIZES

    if twelve is True:
        return TWELVE_SIZES[size if isinstance(size, str) else "small"]
    return twelve


def tasks_yaml() -> str:
    return TASKS_HEADER + yaml.safe_dump(TASKS, sort_keys=False, default_flow_style=False)


def make_world(output, seed: int = 0, size: str | WorldSize = "small", overwrite: bool = False,
               extract: bool = True, progress: bool = False, say=print, twelve=False) -> dict:
    """Write the demo world to `output` (see the module docstring); returns world.json's content.

    If `output` already holds the same complete world (same seed, sizes and generator version),
    nothing is written; any other content of ours there is an error unless `overwrite`.
    `extract=False` writes pictures, annotations and boxes files but no feature stores (the
    extraction commands are then in docs/DEMO.md). `twelve` (True for the size's, or a
    vilbert.demo.twelve.TwelveSize) adds 12-in-1's data sets and task file (vilbert/demo/twelve.py)."""
    started = time.perf_counter()
    root = Path(output)
    world_size = WORLD_SIZES[size] if isinstance(size, str) else size
    if isinstance(size, str) and size not in WORLD_SIZES:
        raise ValueError(f"--size must be one of {', '.join(WORLD_SIZES)}, not {size!r}")
    twelve_size = _twelve_size(twelve, size)
    present = [name for name in ENTRIES if (root / name).exists()]
    if present and not overwrite:
        # world.json is written last, so its presence means a complete world: the same one is
        # kept as it is; anything else (another seed or size, an interrupted run) needs --overwrite.
        existing = _read_world_json(root / "world.json")
        if existing is not None and existing.get("seed") == seed and existing.get("sizes") == asdict(world_size) \
                and existing.get("generator_version") == GENERATOR_VERSION and (existing.get("features") is not None or not extract) \
                and (existing.get("twelve") or {}).get("sizes") == (asdict(twelve_size) if twelve_size else None):
            say(f"{root} already holds this demo world (seed {seed}); nothing to do")
            return existing
        what = "another or an incomplete demo world" if existing is None or existing.get("seed") != seed else "another demo world"
        raise FileExistsError(f"{root} already holds {what} ({', '.join(present)}); pass --overwrite to replace it")
    for name in present:
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    root.mkdir(parents=True, exist_ok=True)

    vqa_coco, ref_coco, flickr_ids = world_ids(seed, world_size)

    parts = {
        "conceptual_captions": _make_concap(root, world_size, seed, say),
        "vqa": _make_vqa(root, world_size, seed, vqa_coco, say),
        "vcr": _make_vcr(root, world_size, seed, say),
        "refcoco+": _make_refcoco(root, world_size, seed, ref_coco, say),
        "flickr30k": _make_flickr(root, world_size, seed, flickr_ids, say),
    }
    generated = time.perf_counter()
    say(f"pictures and annotations written in {generated - started:.1f}s")

    if extract:
        for part in parts.values():
            for images_dir, boxes_file, store in part["jobs"]:
                _extract(images_dir, boxes_file, store, progress)
        _hard_negatives(root / "flickr30k")
        say(f"features extracted in {time.perf_counter() - generated:.1f}s")

    rates = chance.chance_rates(
        vqa_train=parts["vqa"]["files"]["train2014"], vqa_val=parts["vqa"]["files"]["val2014"],
        refs=parts["refcoco+"]["refs"], instances=parts["refcoco+"]["instances"],
        detected=parts["refcoco+"]["detected"], retrieval_images=world_size.flickr_test,
    )
    _write_json(root / "CHANCE.json", rates, indent=2)
    (root / "vlbert_tasks.yml").write_text(tasks_yaml(), encoding="utf-8")
    twelve_info = None
    if twelve_size:
        from .twelve import make_twelve

        twelve_info = make_twelve(root, seed, twelve_size, extract=extract, progress=progress, say=say)

    info = {
        "generator": "python -m vilbert.demo make-world",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size if isinstance(size, str) else "custom",
        "sizes": asdict(world_size),
        "classes": class_names(),
        "num_classes": NUM_CLASSES,
        "shapes": list(SHAPES),
        "colors": list(COLOURS),
        "object_sizes": list(SIZES),
        "cls_prob": "per-box class distribution over `classes` (0 = background) standing in for a "
                    "detector's class posterior: peaked on the true class, with noise",
        "features": "python -m vilbert.features extract --boxes gt --backbone pixels" if extract else None,
        "counts": {name: part["counts"] for name, part in parts.items()},
        "twelve": twelve_info,
    }
    _write_json(root / "world.json", info, indent=2)
    say(f"demo world written to {root} in {time.perf_counter() - started:.1f}s")
    return info
