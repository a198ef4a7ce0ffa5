"""Helpers for the task-data tests: tiny feature stores, task files and a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

FEATURE_DIM = 8


def write_store(path: Path, images: dict, dim: int = FEATURE_DIM, seed: int = 0, with_cls: bool = False) -> Path:
    """A feature store: {image_id: (image_h, image_w, boxes (n, 4))} with random features."""
    from vilbert.features import FeatureWriter

    rng = np.random.default_rng(seed)
    with FeatureWriter(path) as writer:
        for image_id, (h, w, boxes) in images.items():
            boxes = np.asarray(boxes, dtype=np.float32)
            cls_prob = rng.dirichlet(np.ones(5), size=len(boxes)).astype(np.float32) if with_cls else None
            writer.put(image_id, image_h=h, image_w=w, boxes=boxes,
                       features=rng.normal(size=(len(boxes), dim)).astype(np.float32), cls_prob=cls_prob)
    return path


def grid_boxes(n: int, h: int = 60, w: int = 80) -> np.ndarray:
    """n distinct boxes inside an h x w image."""
    boxes = []
    for i in range(n):
        x, y = (7 * i) % (w - 20), (5 * i) % (h - 20)
        boxes.append([x, y, x + 10 + i % 7, y + 12 + i % 5])
    return np.asarray(boxes, dtype=np.float32)


def task_entry(**fields) -> dict:
    """A tasks-file entry with every required field (tiny sizes); `fields` override."""
    entry = {
        "name": "VQA", "type": "VL-classifier", "loss": "BCEWithLogitLoss", "dataroot": "vqa",
        "features_h5path1": "features.lmdb", "features_h5path2": "", "train_annotations_jsonpath": "",
        "val_annotations_jsonpath": "", "max_seq_length": 12, "max_region_num": 6, "batch_size": 4,
        "train_split": "train", "val_split": "val", "lr": 0.00004, "num_epoch": 1,
    }
    entry.update(fields)
    return entry


def write_tasks(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def load_test_tokenizer(minilm_dir):
    from vilbert.tokenization import load_tokenizer

    return load_tokenizer(minilm_dir)


def vqa_world(root: Path, answers_by_question: dict | None = None) -> Path:
    """Official-format VQA v2 files under root/vqa and a store root/features.lmdb.

    4 images (ids 1..4); train questions 100..111 (3 per image), val 200..205, test 300..301.
    """
    dataroot = root / "vqa"
    dataroot.mkdir(parents=True)
    colours = ["red", "blue", "green"]

    def question(qid, image_id, text):
        return {"question_id": qid, "image_id": image_id, "question": text}

    def annotation(qid, image_id, answers):
        return {"question_id": qid, "image_id": image_id, "question_type": "what", "answer_type": "other",
                "multiple_choice_answer": max(set(answers), key=answers.count),
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}

    parts = {"train": range(100, 112), "val": range(200, 206)}
    for part, qids in parts.items():
        questions, annotations = [], []
        for k, qid in enumerate(qids):
            image_id = 1 + k % 4
            questions.append(question(qid, image_id, f"What colour is object {k}?"))
            answers = (answers_by_question or {}).get(qid) or [colours[k % 3]] * 10
            annotations.append(annotation(qid, image_id, answers))
        # Shuffled on purpose: the reader sorts by question id as the originals.
        (dataroot / f"v2_OpenEnded_mscoco_{part}2014_questions.json").write_text(
            json.dumps({"questions": questions[::-1], "data_subtype": f"{part}2014"}))
        (dataroot / f"v2_mscoco_{part}2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    (dataroot / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(
        json.dumps({"questions": [question(300, 1, "Is this a test?"), question(301, 2, "How many?")]}))
    write_store(root / "features.lmdb", {i: (60, 80, grid_boxes(3 + i)) for i in range(1, 5)})
    return dataroot


def vcr_world(root: Path) -> Path:
    """Official-format VCR jsonl (train 3, val 2, test 1 records) and its two stores under root/vcr."""
    dataroot = root / "vcr"
    dataroot.mkdir(parents=True)
    objects = ["person", "person", "dog"]

    def record(split, n, answer_label, rationale_label, labels=True):
        rec = {
            "img_id": f"{split}-{n}", "annot_id": f"{split}-{n}", "objects": objects, "img_fn": f"x/{n}.jpg",
            "metadata_fn": f"x/{n}.json",
            "question": ["Why", "is", [0], "looking", "at", [2], "?"],
            "answer_choices": [[[0], "likes", "the", "dog", "."], ["It", "is", "raining", "."],
                               [[1], "called", [0], "."], [[0, 1], "are", "hungry", "."]],
            "rationale_choices": [[[2], "is", "cute", "."], ["The", "sky", "is", "grey", "."],
                                  ["Phones", "ring", "."], ["Lunch", "time", "."]],
        }
        if labels:
            rec.update(answer_label=answer_label, rationale_label=rationale_label)
        return rec

    files = {"train": [record("train", n, n % 4, (n + 1) % 4) for n in range(3)],
             "val": [record("val", n, n % 4, (n + 2) % 4) for n in range(2)],
             "test": [record("test", 0, 0, 0, labels=False)]}
    for split, records in files.items():
        (dataroot / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    keys = [0, 1, 2, 1_000_000, 1_000_001, 2_000_000]
    write_store(dataroot / "det.lmdb", {k: (60, 80, grid_boxes(5)) for k in keys}, seed=1)
    gt_boxes = np.array([[1, 1, 30, 50], [40, 2, 70, 55], [10, 30, 30, 58]], dtype=np.float32)
    write_store(dataroot / "gt.lmdb", {k: (60, 80, gt_boxes) for k in keys}, seed=2)
    return dataroot


def vcr_entry(name: str, **fields) -> dict:
    return task_entry(
        name=name, type="VL-logit", loss="CrossEntropyLoss", dataroot="vcr",
        features_h5path1="vcr/det.lmdb", features_h5path2="vcr/gt.lmdb",
        train_annotations_jsonpath="vcr/train.jsonl", val_annotations_jsonpath="vcr/val.jsonl",
        max_seq_length=24, max_region_num=8, **fields,
    )


def refer_world(root: Path) -> Path:
    """refer-toolkit files for refcoco+ (4 refs on 2 images) and detection / ground-truth stores.

    Image 10 (100 x 200): referred boxes (x, y, w, h) ann 1 = (10, 10, 40, 40), ann 2 = (100, 20, 50, 60).
    Detections of image 10: box 0 matches ann 1 exactly, box 1 overlaps ann 2 with IoU 0.5^2/..., box 2
    is elsewhere.
    """
    import pickle

    dataroot = root / "refer"
    folder = dataroot / "refcoco+"
    folder.mkdir(parents=True)
    refs = [
        {"ref_id": 0, "ann_id": 1, "image_id": 10, "split": "train", "category_id": 1,
         "sentences": [{"sent_id": 0, "sent": "left guy", "raw": "Left guy", "tokens": ["left", "guy"]},
                       {"sent_id": 1, "sent": "man on the left", "tokens": ["man", "on", "the", "left"]}]},
        {"ref_id": 1, "ann_id": 2, "image_id": 10, "split": "val",
         "sentences": [{"sent_id": 2, "sent": "right one", "tokens": ["right", "one"]}]},
        {"ref_id": 2, "ann_id": 3, "image_id": 11, "split": "testA",
         "sentences": [{"sent_id": 3, "sent": "woman", "tokens": ["woman"]}]},
        {"ref_id": 3, "ann_id": 3, "image_id": 11, "split": "testB",
         "sentences": [{"sent_id": 4, "sent": "dog", "tokens": ["dog"]}]},
    ]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    instances = {
        "images": [{"id": 10, "height": 100, "width": 200}, {"id": 11, "height": 100, "width": 200}],
        "annotations": [{"id": 1, "image_id": 10, "bbox": [10, 10, 40, 40], "category_id": 1},
                        {"id": 2, "image_id": 10, "bbox": [100, 20, 50, 60], "category_id": 1},
                        {"id": 3, "image_id": 11, "bbox": [0, 0, 20, 20], "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    det = np.array([[10, 10, 50, 50], [100, 20, 150, 50], [160, 70, 190, 95]], dtype=np.float32)
    write_store(dataroot / "det.lmdb", {10: (100, 200, det), 11: (100, 200, det)}, seed=3)
    gt = np.array([[10, 10, 50, 50], [100, 20, 150, 80]], dtype=np.float32)
    write_store(dataroot / "gt.lmdb", {10: (100, 200, gt), 11: (100, 200, gt[:1])}, seed=4)
    return dataroot


def refer_entry(**fields) -> dict:
    return task_entry(
        name="refcoco+", type="V-logit", loss="BCEWithLogitLoss", dataroot="refer",
        features_h5path1="refer/det.lmdb", features_h5path2="refer/gt.lmdb", max_region_num=6, **fields,
    )


def flickr_world(root: Path, num_train: int = 6, num_test: int = 3) -> Path:
    """Flickr30k jsonline files (train / val / test, 2 captions per image) and one store.

    Image i's features are the constant i (plus nothing random), so the nearest images by mean
    feature are i - 1 and i + 1.
    """
    from vilbert.features import FeatureWriter

    dataroot = root / "flickr"
    dataroot.mkdir(parents=True)
    ids = {"train": range(100, 100 + num_train), "val_set0": range(200, 202), "test_set0": range(300, 300 + num_test)}
    for part, image_ids in ids.items():
        lines = [json.dumps({"sentences": [f"picture {i} shows thing {i}", f"image {i} again"],
                             "img_path": f"{i}.jpg", "id": k}) for k, i in enumerate(image_ids)]
        (dataroot / f"all_data_final_{part}_2014.jsonline").write_text("\n".join(lines) + "\n")
    with FeatureWriter(dataroot / "flickr.lmdb") as writer:
        for image_ids in ids.values():
            for i in image_ids:
                writer.put(i, image_h=60, image_w=80, boxes=grid_boxes(3),
                           features=np.full((3, FEATURE_DIM), float(i), dtype=np.float32))
    return dataroot


def flickr_entry(**fields) -> dict:
    return task_entry(
        name="RetrievalFlickr30k", type="VL-logit", loss="CrossEntropyLoss", dataroot="flickr",
        features_h5path1="flickr/flickr.lmdb",
        train_annotations_jsonpath="flickr/all_data_final_train_2014.jsonline",
        val_annotations_jsonpath="flickr/all_data_final_val_set0_2014.jsonline", max_region_num=4, **fields,
    )


def snli_ve_world(root: Path) -> Path:
    """Official-format SNLI-VE jsonl (train 6, dev 3, test 2 records) on Flickr30k ids 11..13."""
    dataroot = root / "snli_ve"
    dataroot.mkdir(parents=True)
    gold = ["entailment", "neutral", "contradiction"]
    for split, count in (("train", 6), ("dev", 3), ("test", 2)):
        lines = [json.dumps({"Flikr30kID": f"{11 + k % 3}.jpg", "sentence1": "A premise.",
                             "sentence2": f"hypothesis {k} of {split}", "gold_label": gold[k % 3],
                             "pairID": f"{split}-{k}", "captionID": f"{11 + k % 3}.jpg#0"})
                 for k in range(count)]
        (dataroot / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")
    write_store(dataroot / "flickr.lmdb", {i: (60, 80, grid_boxes(3 + i % 2)) for i in (11, 12, 13)}, seed=5)
    return dataroot


def nlvr2_world(root: Path) -> Path:
    """Official-format NLVR2 JSON lines (train 4, dev 2, test1 2 examples) and a store keyed by
    the image names derived from the identifiers ("<split>-<set>-<pair>-img0/1")."""
    dataroot = root / "nlvr2"
    dataroot.mkdir(parents=True)
    images = {}
    for split, count in (("train", 4), ("dev", 2), ("test1", 2)):
        records = [{"identifier": f"{split}-{10 + k}-{k % 2}-{k % 3}", "sentence": f"there are {k} dogs",
                    "label": "True" if k % 2 == 0 else "False", "left_url": "x", "right_url": "y"}
                   for k in range(count)]
        (dataroot / f"{split}.json").write_text("".join(json.dumps(r) + "\n" for r in records))
        for r in records:
            stem = r["identifier"].rsplit("-", 1)[0]
            images[f"{stem}-img0"] = (60, 80, grid_boxes(3))
            images[f"{stem}-img1"] = (60, 80, grid_boxes(4))
    write_store(dataroot / "nlvr2.lmdb", images, seed=6)
    return dataroot


def gqa_world(root: Path) -> Path:
    """Official-format GQA balanced questions: train 5, val 3, testdev 2 on images "n1", "2", "3"."""
    dataroot = root / "gqa"
    dataroot.mkdir(parents=True)
    answers = ["yes", "no", "left", "yes", "cat"]
    parts = {"train": range(5), "val": range(5, 8), "testdev": range(8, 10)}
    for part, numbers in parts.items():
        questions = {f"{n:08d}": {"imageId": ["n1", "2", "3"][n % 3], "question": f"Is thing {n} there?",
                                  "answer": answers[n % 5], "fullAnswer": "It is.", "types": {}, "isBalanced": True}
                     for n in numbers}
        (dataroot / f"{part}_balanced_questions.json").write_text(json.dumps(dict(reversed(questions.items()))))
    write_store(dataroot / "gqa.lmdb", {i: (60, 80, grid_boxes(4)) for i in ("n1", "2", "3")}, seed=7)
    return dataroot


def train_step_and_evaluate(task, tokenizer, seed: int = 0) -> dict:
    """One optimizer step of a tiny ViLBertForVLTasks (12-in-1's extra heads built) on `task`'s
    training split, then its evaluator over the val split: {"out", "metrics", "results", "model"}."""
    import torch

    from _model_helpers import tiny_config as tiny_model_config
    from vilbert.finetune import TaskRun, evaluate_task
    from vilbert.model import ViLBertForVLTasks
    from vilbert.training import DistInfo, Precision, train_step

    torch.manual_seed(seed)
    model = ViLBertForVLTasks(tiny_model_config(vocab_size=30522, v_feature_size=FEATURE_DIM), num_labels=3,
                              multitask_heads=True)
    dist = DistInfo()
    precision = Precision.create("fp32", dist.device)
    train = task.dataset(task.config.train_split, tokenizer)
    val = task.dataset(task.config.val_split, tokenizer)
    run = TaskRun(task, train, val, global_batch=2, accumulation=1, num_epochs=1, dist=dist, eval_batch_size=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    head = getattr(model, task.head)
    before = {name: p.detach().clone() for name, p in head.named_parameters()}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    out = train_step(model, run.next_batches(), run.objective, optimizer, scheduler, precision, dist)
    assert any(not torch.equal(before[name], p) for name, p in head.named_parameters()), "the head did not train"
    evaluator = evaluate_task(model, task, val, run.val_loader, precision, dist)
    return {"out": out, "metrics": evaluator.compute(), "results": evaluator.results(), "model": model}
