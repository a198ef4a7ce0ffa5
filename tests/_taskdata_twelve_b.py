"""Generated data in the official formats of Visual Dialog (VisDial v1.0), Visual7W pointing and
GuessWhat?!, with their feature stores, for the reader, metric and task-file tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import yaml

from _taskdata_helpers import FEATURE_DIM, grid_boxes, write_store

NUM_ANSWERS = 120  # VisDial rounds have 100 options: the pool must be larger


def visdial_world(root: Path, val_rounds: int = 3) -> Path:
    """root/visdial: visdial_1.0_{train,val,test}.json and the val dense annotations, store coco.lmdb.

    train: dialogs on images 1 and 2, 10 rounds each; val: images 3 and 4, `val_rounds` rounds each;
    test: image 5, 3 rounds, the last with options only. Dense annotations: image 3 round 2 (if
    there is one) and image 4 round 1. Question q of round r of dialog d is
    "is it thing <d><r>", its answer option k of the round is answer (d + r + k) % 120 and the right
    one is option (3 * r + d) % 100.
    """
    dataroot = root / "visdial"
    dataroot.mkdir(parents=True)
    questions = [f"is it thing {n}" for n in range(60)]
    answers = [f"reply {n}" for n in range(NUM_ANSWERS)]

    def dialog(d: int, image_id: int, rounds: int, last_open: bool = False) -> dict:
        entries = []
        for r in range(rounds):
            options = [(d + r + k) % NUM_ANSWERS for k in range(100)]
            gt = (3 * r + d) % 100
            entry = {"question": (10 * d + r) % 60, "answer": options[gt], "answer_options": options, "gt_index": gt}
            if last_open and r == rounds - 1:
                entry = {"question": entry["question"], "answer_options": options}
            elif last_open:
                del entry["answer_options"], entry["gt_index"]
            entries.append(entry)
        return {"image_id": image_id, "caption": f"a picture of scene {image_id}", "dialog": entries}

    splits = {"train": [dialog(0, 1, 10), dialog(1, 2, 10)],
              "val": [dialog(2, 3, val_rounds), dialog(3, 4, val_rounds)],
              "test": [dialog(4, 5, 3, last_open=True)]}
    for split, dialogs in splits.items():
        data = {"version": "1.0", "split": split,
                "data": {"questions": questions, "answers": answers, "dialogs": dialogs}}
        (dataroot / f"visdial_1.0_{split}.json").write_text(json.dumps(data))
    dense = [{"image_id": 3, "round_id": 2, "gt_relevance": dense_relevance(0)}] if val_rounds > 1 else []
    dense.append({"image_id": 4, "round_id": 1, "gt_relevance": dense_relevance(1)})
    (dataroot / "visdial_1.0_val_dense_annotations.json").write_text(json.dumps(dense))
    write_store(dataroot / "coco.lmdb", {i: (60, 80, grid_boxes(3 + i % 2)) for i in range(1, 6)}, seed=11)
    return dataroot


def dense_relevance(shift: int) -> list[float]:
    """100 relevances: options shift, shift + 1 and 50 relevant (1, 0.5, 0.5), the rest 0."""
    relevance = [0.0] * 100
    relevance[shift], relevance[shift + 1], relevance[50] = 1.0, 0.5, 0.5
    return relevance


# Visual7W boxes (x, y, width, height) by box id; 12 overlaps 13 with IoU 0.8, the others do not.
V7W_BOXES = {11: (0, 0, 10, 10), 12: (30, 20, 20, 20), 13: (30, 20, 20, 16), 14: (60, 5, 10, 20),
             15: (5, 40, 15, 15), 16: (45, 45, 20, 10), 17: (70, 40, 8, 15), 21: (2, 2, 30, 30),
             22: (40, 10, 30, 30), 23: (10, 40, 20, 15), 24: (50, 40, 25, 15), 25: (0, 30, 10, 25)}
V7W_IMAGES = {  # image id: (split, [(qa_id, answer, multiple choices)])
    1: ("train", [(101, 13, [15, 11, 12]), (102, 14, [17, 11, 16])]),
    2: ("train", [(103, 22, [21, 23, 24])]),
    3: ("val", [(104, 13, [12, 11, 14]), (105, 16, [17, 15, 11])]),
    4: ("test", [(106, 25, [21, 22, 23])]),
}


def visual7w_world(root: Path) -> Path:
    """root/visual7w: dataset_v7w_pointing.json, detections v7w_det.lmdb and ground truth
    v7w_gt.lmdb (each image's boxes in the order of their box ids), keyed "v7w_<image id>"."""
    dataroot = root / "visual7w"
    dataroot.mkdir(parents=True)
    boxes = [{"box_id": b, "x": x, "y": y, "width": w, "height": h, "name": f"thing {b}"}
             for b, (x, y, w, h) in V7W_BOXES.items()]
    images = [{"image_id": i, "split": split, "filename": f"v7w_{i}.jpg", "height": 60, "width": 80,
               "qa_pairs": [{"qa_id": q, "image_id": i, "question": f"Which thing {q}?", "answer": a,
                             "multiple_choices": mc, "type": "which"} for q, a, mc in qas]}
              for i, (split, qas) in V7W_IMAGES.items()]
    (dataroot / "dataset_v7w_pointing.json").write_text(json.dumps({"boxes": boxes, "images": images}))
    gt = {}
    for i, (_, qas) in V7W_IMAGES.items():
        ids = sorted({b for _, a, mc in qas for b in [a, *mc]})
        gt[f"v7w_{i}"] = (60, 80, np.asarray([xyxy(V7W_BOXES[b]) for b in ids], dtype=np.float32))
    write_store(dataroot / "v7w_gt.lmdb", gt, seed=12)
    write_store(dataroot / "v7w_det.lmdb", {key: (60, 80, grid_boxes(4)) for key in gt}, seed=13)
    return dataroot


def xyxy(box) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


# GuessWhat?! objects by image: object id -> (x, y, width, height); 31 and 32 overlap with IoU 0.8.
GW_OBJECTS = {21: {31: (0, 0, 20, 20), 32: (0, 0, 20, 16), 33: (40, 10, 20, 30)},
              22: {41: (10, 10, 30, 20), 42: (50, 30, 20, 20), 43: (0, 40, 15, 15), 44: (60, 0, 15, 15)},
              23: {51: (5, 5, 10, 10), 52: (30, 30, 20, 20), 53: (60, 40, 15, 15)}}
GW_GAMES = {  # split: [(game id, image id, target object, [(question id, question, answer)])]
    "train": [(1, 21, 32, [(1, "is it a cat", "Yes"), (2, "is it on the left", "No")]),
              (2, 22, 43, [(3, "is it red", "N/A")]),
              (3, 21, 33, [(4, "is it big", "No"), (5, "is it a dog", "Yes"), (6, "is it round", "No")])],
    "valid": [(4, 23, 52, [(7, "is it a car", "Yes"), (8, "is it blue", "No")]),
              (5, 22, 41, [(9, "is it a cup", "No")])],
    "test": [(6, 23, 51, [(10, "is it a bird", "N/A")])],
}


def guesswhat_world(root: Path) -> Path:
    """root/guesswhat: guesswhat.{train,valid,test}.jsonl.gz, the COCO store coco.lmdb and the
    ground-truth store gw_gt.lmdb (each image's objects in the order of their ids), keyed by image id."""
    dataroot = root / "guesswhat"
    dataroot.mkdir(parents=True)
    for split, games in GW_GAMES.items():
        lines = []
        for game_id, image_id, target, qas in games:
            objects = [{"id": o, "category": "thing", "category_id": 1, "bbox": list(box), "area": box[2] * box[3],
                        "segment": [], "iscrowd": False} for o, box in reversed(GW_OBJECTS[image_id].items())]
            lines.append(json.dumps({
                "id": game_id, "status": "success", "object_id": target, "questioner_id": 0, "timestamp": "",
                "image": {"id": image_id, "width": 80, "height": 60, "file_name": f"COCO_{image_id}.jpg"},
                "objects": objects, "qas": [{"id": q, "question": text, "answer": a} for q, text, a in qas]}))
        with gzip.open(dataroot / f"guesswhat.{split}.jsonl.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    gt = {i: (60, 80, np.asarray([xyxy(objects[o]) for o in sorted(objects)], dtype=np.float32))
          for i, objects in GW_OBJECTS.items()}
    write_store(dataroot / "gw_gt.lmdb", gt, seed=14)
    write_store(dataroot / "coco.lmdb", {i: (60, 80, grid_boxes(3)) for i in GW_OBJECTS}, seed=15)
    return dataroot



REPO = Path(__file__).resolve().parents[1]


def shrunk_twelve_in_one_tasks(root: Path, entries: dict) -> Path:
    """root/vilbert_tasks.yml: the root vilbert_tasks.yml's entries named in `entries` ({key: fields})
    as they are but for the given fields (paths, sizes); and root/tiny.json, the tiny model config
    for the offline BERT's vocabulary and the test stores' features."""
    from vilbert.config import ViLBertConfig

    released = yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())
    path = root / "vilbert_tasks.yml"
    path.write_text(yaml.safe_dump({key: {**released[key], **fields} for key, fields in entries.items()},
                                   sort_keys=False))
    config = ViLBertConfig.from_json_file(REPO / "config" / "vilbert_tiny.json")
    config.vocab_size, config.v_feature_size = 30522, FEATURE_DIM
    config.to_json_file(root / "tiny.json")
    return path


def train_then_evaluate_best(tasks_file: Path, task_ids: str, bert_dir, steps: int = 8) -> tuple[dict, dict]:
    """train_tasks.py on `task_ids` with task tokens, then eval_tasks.py on each task's best checkpoint.
    Returns ({task name: the run's validation metrics}, {task name: (eval_tasks' metrics, result records)})."""
    import eval_tasks
    import train_tasks

    root = tasks_file.parent
    ids = {entry["name"]: entry["task_id"] for entry in yaml.safe_load(tasks_file.read_text()).values()}
    common = ["--tasks_config", str(tasks_file), "--bert_model", str(bert_dir), "--num_workers", "0",
              "--task_specific_tokens"]
    assert train_tasks.main([*common, "--tasks", task_ids, "--config_file", str(root / "tiny.json"),
                             "--output_dir", str(root / "runs"), "--save_name", "t", "--max_steps", str(steps)]) == 0
    (run_dir,) = (root / "runs").iterdir()
    val = json.loads((run_dir / "val_metrics.json").read_text())
    evaluated = {}
    for name in val:
        out = root / f"eval-{name}"
        assert eval_tasks.main([*common, "--tasks", str(ids[name]), "--from_pretrained", str(run_dir / "best" / name),
                                "--output_dir", str(out)]) == 0
        evaluated[name] = (json.loads((out / "val_metrics.json").read_text())[name],
                           json.loads((out / f"val_{name}_result.json").read_text()))
    return val, evaluated


def build_one_task(root: Path, key: str, **fields):
    """The task of a one-entry tasks file root/tasks.yml: task_entry(**fields) under `key` ("TASK3")."""
    from _taskdata_helpers import task_entry, write_tasks
    from vilbert.tasks.config import load_task_configs
    from vilbert.tasks.registry import build_task

    write_tasks(root / "tasks.yml", {key: task_entry(**fields)})
    return build_task(load_task_configs(root / "tasks.yml")[int(key[4:])])
