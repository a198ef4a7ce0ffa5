"""Generated data in the official formats of 12-in-1's GenomeQA, RefCOCOg, Foil and FlickrGrounding
(tiny, with hand-checkable boxes), for the reader tests and the task-file test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import yaml

from _taskdata_helpers import FEATURE_DIM, grid_boxes, refer_world, task_entry, write_store, write_tasks
from vilbert.safe_pickle import safe_load

GENOME_ANSWERS = ["yes", "no", "red", "2"]


def build_one_task(root: Path, task_id: int, **fields):
    """The Task of a one-entry tasks file root/tasks.yml (task_entry's tiny sizes, `fields` override)."""
    from vilbert.tasks.config import load_task_configs
    from vilbert.tasks.registry import build_task

    write_tasks(root / "tasks.yml", {f"TASK{task_id}": task_entry(**fields)})
    return build_task(load_task_configs(root / "tasks.yml")[task_id])


def write_tiny_model_config(path: Path) -> Path:
    """config/vilbert_tiny.json with BERT's vocabulary and the test stores' feature size."""
    config = json.loads((Path(__file__).resolve().parents[1] / "config" / "vilbert_tiny.json").read_text())
    config.update(vocab_size=30522, v_feature_size=FEATURE_DIM)
    path.write_text(json.dumps(config))
    return path


def write_twelve_in_one_tasks(root: Path, data: dict) -> Path:
    """root/vilbert_tasks.yml: the repository's vilbert_tasks.yml entries `data` names ({key:
    (dataroot, detection store, ground-truth store or "")}, stores under the dataroot) as they are,
    with only their paths and sizes changed (an annotation path keeps its file name, under dataroot)."""
    released = yaml.safe_load((Path(__file__).resolve().parents[1] / "vilbert_tasks.yml").read_text())
    entries = {}
    for key, (dataroot, detections, ground_truth) in data.items():
        entry = dict(released[key], dataroot=str(dataroot), features_h5path1=str(dataroot / detections),
                     features_h5path2=str(dataroot / ground_truth) if ground_truth else "", max_seq_length=12,
                     max_region_num=6, batch_size=2, eval_batch_size=2, num_epoch=1)
        for field in ("train_annotations_jsonpath", "val_annotations_jsonpath"):
            if entry[field]:
                entry[field] = str(dataroot / Path(entry[field]).name)
        entries[key] = entry
    return write_tasks(root / "vilbert_tasks.yml", entries)


def train_then_evaluate_each(tasks_file: Path, minilm_dir, names: dict, records: dict, max_steps: int = 6) -> None:
    """train_tasks.py on the tasks `names` ({id: name}) of tasks_file, then eval_tasks.py on each task's
    best checkpoint: it must find the training run's val metrics again and write `records[id]` results."""
    import eval_tasks
    import train_tasks

    root = tasks_file.parent
    common = ["--tasks_config", str(tasks_file), "--bert_model", str(minilm_dir), "--num_workers", "0"]
    assert train_tasks.main([*common, "--tasks", "-".join(names), "--config_file",
                             str(write_tiny_model_config(root / "tiny.json")), "--output_dir", str(root / "runs"),
                             "--save_name", "t", "--max_steps", str(max_steps), "--task_specific_tokens"]) == 0
    run_dir = root / "runs" / ("-".join(names.values()) + "_t")
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert set(val) == set(names.values()) and all(set(m) == {"accuracy"} for m in val.values())
    for task_id, name in names.items():
        out = root / f"eval-{task_id}"
        assert eval_tasks.main([*common, "--tasks", task_id, "--from_pretrained", str(run_dir / "best" / name),
                                "--output_dir", str(out), "--task_specific_tokens"]) == 0
        metrics = json.loads((out / "val_metrics.json").read_text())[name]
        assert metrics == val[name]  # the best checkpoint of the task, evaluated again
        assert len(json.loads((out / f"val_{name}_result.json").read_text())) == records[task_id]


def genome_world(root: Path, official: bool = False) -> Path:
    """Visual Genome QA on images 1..3: 8 questions, qa_ids 17 down to 10 (the reader sorts them).

    12-in-1's layout (cache/trainval_target.pkl + trainval_{label2ans,ans2label}.pkl), or with
    `official` the release's question_answers.json (answers "Red." etc.) and no vocabulary.
    """
    dataroot = root / "visual_genome"
    (dataroot / "cache").mkdir(parents=True)
    questions = [(qid, 1 + qid % 3, f"what is thing {qid}?", GENOME_ANSWERS[qid % 4]) for qid in range(17, 9, -1)]
    if official:
        by_image: dict[int, list] = {}
        for qid, image, text, answer in questions:
            by_image.setdefault(image, []).append({"qa_id": qid, "image_id": image, "question": text,
                                                   "answer": answer.capitalize() + ".", "a_objects": [],
                                                   "q_objects": []})
        (dataroot / "question_answers.json").write_text(json.dumps([{"id": i, "qas": q} for i, q in by_image.items()]))
    else:
        # Soft targets as 12-in-1 distributes them: the answer at 1.0, and "yes" at 0.3 for odd ids.
        targets = [{"question_id": qid, "image_id": image, "question": text,
                    "labels": [GENOME_ANSWERS.index(answer)] + ([0] if qid % 2 and answer != "yes" else []),
                    "scores": [1.0] + ([0.3] if qid % 2 and answer != "yes" else [])}
                   for qid, image, text, answer in questions]
        (dataroot / "cache" / "trainval_target.pkl").write_bytes(pickle.dumps(targets, protocol=2))
        (dataroot / "cache" / "trainval_label2ans.pkl").write_bytes(pickle.dumps(GENOME_ANSWERS, protocol=2))
        (dataroot / "cache" / "trainval_ans2label.pkl").write_bytes(
            pickle.dumps({a: i for i, a in enumerate(GENOME_ANSWERS)}, protocol=2))
    write_store(dataroot / "vg.lmdb", {i: (60, 80, grid_boxes(3 + i)) for i in (1, 2, 3)}, seed=11)
    return dataroot


def refcocog_world(root: Path) -> Path:
    """RefCOCOg in the refer toolkit's UMD layout: refer_world's refs and stores (under root/refer),
    with refcocog/refs(umd).p split by umd (train / val / test) and its instances.json.

    Splits: ref 1 (image 10, ann 2 = [100, 20, 150, 80]) and ref 2 (image 11, ann 3 = [0, 0, 20, 20])
    train; ref 0 (image 10, ann 1 = [10, 10, 50, 50], two sentences) val; ref 3 test.
    """
    dataroot = refer_world(root)
    refs = safe_load(dataroot / "refcoco+" / "refs(unc).p")
    for ref in refs:
        ref["split"] = {0: "val", 1: "train", 2: "train", 3: "test"}[ref["ref_id"]]
    (dataroot / "refcocog").mkdir()
    (dataroot / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=2))
    (dataroot / "refcocog" / "instances.json").write_bytes((dataroot / "refcoco+" / "instances.json").read_bytes())
    return dataroot


def foil_world(root: Path) -> Path:
    """FOIL-COCO train (6 captions) and test (4) files on COCO images 31..33, and a store."""
    dataroot = root / "Foil"
    dataroot.mkdir(parents=True)
    for name, count, first_id in (("train", 6, 100), ("test", 4, 200)):
        annotations = [{"id": first_id + k, "image_id": 31 + k % 3, "caption": f"A Dog sits on bench {k}.",
                        "foil": bool(k % 2), "foil_word": "dog" if k % 2 else "ORIG", "target_word": "cat",
                        "foil_id": 900 + k} for k in range(count)]
        (dataroot / f"foilv1.0_{name}_2017.json").write_text(json.dumps(
            {"info": {}, "licenses": [], "images": [{"id": i} for i in (31, 32, 33)], "annotations": annotations}))
    write_store(dataroot / "coco.lmdb", {i: (60, 80, grid_boxes(3 + i % 2)) for i in (31, 32, 33)}, seed=14)
    return dataroot


def _entities_xml(width: int, height: int, objects: list[tuple[list[str], list[int] | None]]) -> str:
    parts = [f"<annotation><filename>x.jpg</filename><size><width>{width}</width><height>{height}</height>"
             "<depth>3</depth></size>"]
    for names, box in objects:
        inner = "".join(f"<name>{n}</name>" for n in names)
        if box is None:
            inner += "<nobndbox>1</nobndbox><scene>0</scene>"
        else:
            inner += "<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box)) \
                     + "</bndbox>"
        parts.append(f"<object>{inner}</object>")
    return "".join(parts) + "</annotation>"


def flickr_entities_world(root: Path) -> Path:
    """Flickr30k Entities on images 41 (train), 42 (val), 43 (test), with detection / gt stores.

    Every image is 80 x 60 with phrase 1 boxed at xml (11, 11, 41, 41) -> [10, 10, 40, 40] and again
    at (51, 1, 61, 11), phrase 2 at xml (1, 31, 21, 51) -> [0, 30, 20, 50], phrase 3 without a box
    and phrase 0 (notvisual). Detections: [10, 10, 40, 40] (phrase 1 exactly), [0, 30, 20, 40] (IoU
    0.5 with phrase 2), [60, 0, 75, 20].
    """
    dataroot = root / "flickr30k"
    (dataroot / "Annotations").mkdir(parents=True)
    (dataroot / "Sentences").mkdir()
    xml = _entities_xml(80, 60, [(["1"], [11, 11, 41, 41]), (["1"], [51, 1, 61, 11]), (["2", "4"], [1, 31, 21, 51]),
                                 (["3"], None)])
    sentences = ("[/EN#1/people A little girl] holds [/EN#2/animals/other a puppy] in [/EN#3/scene the park] .\n"
                 "[/EN#1/people A child] is with [/EN#0/notvisual someone] .\n")
    for split, image in (("train", 41), ("val", 42), ("test", 43)):
        (dataroot / f"{split}.txt").write_text(f"{image}\n")
        (dataroot / "Annotations" / f"{image}.xml").write_text(xml)
        (dataroot / "Sentences" / f"{image}.txt").write_text(sentences)
    det = np.array([[10, 10, 40, 40], [0, 30, 20, 40], [60, 0, 75, 20]], dtype=np.float32)
    write_store(dataroot / "flickr_det.lmdb", {i: (60, 80, det) for i in (41, 42, 43)}, seed=15)
    gt = np.array([[10, 10, 40, 40], [0, 30, 20, 50]], dtype=np.float32)
    write_store(dataroot / "flickr_gt.lmdb", {i: (60, 80, gt) for i in (41, 42, 43)}, seed=16)
    return dataroot
