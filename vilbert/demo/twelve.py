"""The demo world's 12-in-1 part (`make-world --twelve`): every added data set of 12-in-1 in its
official files, a 12-in-1 task file and each task's chance rate.

Written beside the base world (vilbert.demo.make), from new pictures where the data set has its
own images, else from the base world's scenes (read back from its scenes.json files):

    vilbert_tasks.yml     12-in-1's eighteen tasks, its ids and fields (values as the repository's
                          vilbert_tasks.yml; paths and sizes fit the demo world)
    nlvr2/                {train,dev,test1}.json  images/<split>-<n>-0-img{0,1}.png  features/regions.lmdb
    visual_entailment/    snli_ve_{train,dev,test}.jsonl            (Flickr30k pictures)
    gqa/                  {train,val,testdev}_balanced_questions.json  images/<imageId>.png  features/regions.lmdb
    visual_genome/        question_answers.json  cache/trainval_label2ans.json (VQA's answers, as
                          12-in-1 trains GenomeQA on VQA's head)  images/<id>.png  features/regions.lmdb
    Foil/                 foilv1.0_{train,test}_2017.json           (VQA's COCO pictures)
    cocoRetrieval/        all_data_final_{train,val_set0,test_set0}_2014.jsonline  hard_negative.json
                          (VQA's COCO pictures)
    refcoco/refcoco/      refs(unc).p  instances.json               (RefCOCO+'s pictures)
    refcoco/refcocog/     refs(umd).p  instances.json               (RefCOCO+'s pictures)
    flickr30k/            {train,val,test}.txt  Sentences/<id>.txt  Annotations/<id>.xml (Entities)
    visual7w/             dataset_v7w_pointing.json  images/v7w_<id>.png  features/{detections,gt}.lmdb
    guesswhat/            guesswhat.{train,valid,test}.jsonl.gz     (RefCOCO+'s pictures and stores)
    visual_dialog/        visdial_1.0_{train,val,test}.json  visdial_1.0_val_dense_annotations.json
                          (VQA's COCO pictures)

CHANCE.json gains one entry per added task (see `chance_rates`). Each data set draws from its own
random stream, so files are byte-identical for a seed (the .gz files carry no time stamp).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from . import captions, chance
from . import twelve_formats as formats
from .make import _extract, _jsonl_text, _Pictures, _unique_ids, _write_json, _write_jsonl
from .vqa import AnswerBalancer
from .world import Scene, box_iou, sample_scene

# Random streams of the 12-in-1 part (the base world's are 0-6).
STREAMS = {"ids": 20, "nlvr2": 21, "snli_ve": 22, "gqa": 23, "genome": 24, "foil": 25, "coco_retrieval": 26,
           "refcoco": 27, "refcocog": 28, "entities": 29, "visual7w": 30, "guesswhat": 31, "visdial": 32}
ENTRIES = ("vilbert_tasks.yml", "nlvr2", "visual_entailment", "gqa", "visual_genome", "Foil", "cocoRetrieval",
           "visual7w", "guesswhat", "visual_dialog")
DIALOG_ROUNDS = 10  # rounds of a VisDial dialog (v1.0)
DIALOG_OPTIONS = 100  # answer options of a round


@dataclass(frozen=True)
class TwelveSize:
    """Pictures of the data sets with pictures of their own (the others use the base world's)."""

    nlvr2_train: int  # image pairs
    nlvr2_dev: int
    nlvr2_test: int
    gqa_train: int
    gqa_val: int
    gqa_testdev: int
    genome_images: int
    v7w_train: int
    v7w_val: int
    v7w_test: int
    nlvr2_statements_per_pair: int = 2
    gqa_questions_per_image: int = 15
    genome_questions_per_image: int = 15
    v7w_questions_per_image: int = 2
    games_per_image: int = 2


# GQA holds out the last 3000 train + val questions as minval and Visual Genome the last 5000 as
# val (the readers' rules, as 12-in-1): the small world has enough questions for both.
SMALL = TwelveSize(nlvr2_train=300, nlvr2_dev=60, nlvr2_test=30, gqa_train=240, gqa_val=60, gqa_testdev=20,
                   genome_images=700, v7w_train=200, v7w_val=50, v7w_test=30)
MEDIUM = TwelveSize(nlvr2_train=3000, nlvr2_dev=600, nlvr2_test=300, gqa_train=1200, gqa_val=300,
                    gqa_testdev=100, genome_images=2000, v7w_train=2000, v7w_val=500, v7w_test=300)
TWELVE_SIZES = {"small": SMALL, "medium": MEDIUM}

# The task file: 12-in-1's entries (name, type, loss, process, task_id, splits, lr, num_epoch as its
# vilbert_tasks.yml), with the demo world's paths and sizes: (dataroot, features_h5path1,
# features_h5path2, train / val annotations, max_seq_length, max_region_num, batch_size,
# eval_batch_size). Texts and regions fit (tests check); 12-in-1's VisDial texts are 50 tokens
# whatever max_seq_length says.
_RELEASED = {  # key: (name, type, loss, process, train_split, val_split, lr)
    1: ("VQA", "VL-classifier", "BCEWithLogitLoss", "normal", "trainval", "minval", 0.00004),
    2: ("GenomeQA", "VL-classifier", "BCEWithLogitLoss", "normal", "train", "val", 0.00004),
    3: ("VisualDialog", "VL-logit", "CrossEntropyLoss", "dialog", "train", "val", 0.00004),
    4: ("Visual7w", "V-logit-mc", "BCEWithLogitLoss", "normal", "train", "val", 0.00002),
    5: ("VCR_Q-A", "VL-logit", "CrossEntropyLoss", "expand", "train", "val", 0.00002),
    6: ("VCR_QA-R", "VL-logit", "CrossEntropyLoss", "expand", "train", "val", 0.00002),
    7: ("RetrievalCOCO", "VL-logit", "CrossEntropyLoss", "retrieval", "train", "val", 0.00002),
    8: ("RetrievalFlickr30k", "VL-logit", "CrossEntropyLoss", "retrieval", "train", "val", 0.00002),
    9: ("refcoco", "V-logit", "BCEWithLogitLoss", "normal", "train", "val", 0.00002),
    10: ("refcoco+", "V-logit", "BCEWithLogitLoss", "normal", "train", "val", 0.00002),
    11: ("refcocog", "V-logit", "BCEWithLogitLoss", "normal", "train", "val", 0.00002),
    12: ("NLVR2", "VL-binary-classifier", "BCEWithLogitLoss", "nlvr", "train", "dev", 0.00002),
    13: ("VisualEntailment", "VL-tri-classifier", "BCEWithLogitLoss", "normal", "train", "dev", 0.00002),
    14: ("GuessWhat", "VL-tri-classifier", "BCEWithLogitLoss", "normal", "train", "valid", 0.00004),
    15: ("GQA", "VL-classifier-GQA", "BCEWithLogitLoss", "normal", "trainval", "minval", 0.00004),
    16: ("Foil", "VL-binary-classifier", "CrossEntropyLoss", "normal", "train", "val", 0.00004),
    17: ("GuessWhatPointing", "V-logit-mc", "BCEWithLogitLoss", "normal", "train", "valid", 0.00002),
    18: ("FlickrGrounding", "V-logit", "BCEWithLogitLoss", "normal", "train", "val", 0.000002),
}
_REFER_STORES = ("refcoco/features/detections.lmdb", "refcoco/features/gt.lmdb")
_DEMO = {  # key: (dataroot, features 1, features 2, train annotations, val annotations, seq, regions, batch, eval batch)
    1: ("vqa", "vqa/features/regions.lmdb", "", "", "", 16, 8, 32, 128),
    2: ("visual_genome", "visual_genome/features/regions.lmdb", "", "", "", 16, 8, 32, 128),
    3: ("visual_dialog", "vqa/features/regions.lmdb", "", "visual_dialog/visdial_1.0_train.json",
        "visual_dialog/visdial_1.0_val.json", 16, 8, 4, 400),
    4: ("visual7w", "visual7w/features/detections.lmdb", "visual7w/features/gt.lmdb", "", "", 16, 24, 32, 128),
    5: ("vcr", "vcr/features/detections.lmdb", "vcr/features/gt.lmdb", "vcr/train.jsonl", "vcr/val.jsonl",
        24, 24, 16, 64),
    6: ("vcr", "vcr/features/detections.lmdb", "vcr/features/gt.lmdb", "vcr/train.jsonl", "vcr/val.jsonl",
        36, 24, 16, 64),
    7: ("cocoRetrieval", "vqa/features/regions.lmdb", "", "cocoRetrieval/all_data_final_train_2014.jsonline",
        "cocoRetrieval/all_data_final_test_set0_2014.jsonline", 32, 8, 16, 128),
    8: ("flickr30k", "flickr30k/features/regions.lmdb", "", "flickr30k/all_data_final_train_2014.jsonline",
        "flickr30k/all_data_final_test_set0_2014.jsonline", 32, 8, 16, 128),
    9: ("refcoco", *_REFER_STORES, "", "", 16, 24, 32, 128),
    10: ("refcoco", *_REFER_STORES, "", "", 12, 24, 32, 128),
    11: ("refcoco", *_REFER_STORES, "", "", 20, 24, 32, 128),
    12: ("nlvr2", "nlvr2/features/regions.lmdb", "", "", "", 24, 8, 32, 128),
    13: ("visual_entailment", "flickr30k/features/regions.lmdb", "", "", "", 20, 8, 32, 128),
    14: ("guesswhat", "refcoco/features/detections.lmdb", "", "", "", 12, 24, 32, 128),
    15: ("gqa", "gqa/features/regions.lmdb", "", "", "", 20, 8, 32, 128),
    16: ("Foil", "vqa/features/regions.lmdb", "", "Foil/foilv1.0_train_2017.json", "Foil/foilv1.0_test_2017.json",
         16, 8, 32, 128),
    17: ("guesswhat", *_REFER_STORES, "", "", 80, 24, 16, 64),
    18: ("flickr30k", "flickr30k/features/regions.lmdb", "flickr30k/features/regions.lmdb", "", "", 16, 16, 32, 128),
}
TASKS_HEADER = """\
# The demo world's 12-in-1 task file (python -m vilbert.demo make-world --twelve): 12-in-1's eighteen
# tasks with its ids and fields (values as the repository's vilbert_tasks.yml), paths and sizes fit
# for the demo world; relative paths are resolved against the directory of this file. Pass it as
# --tasks_config; vlbert_tasks.yml beside it keeps the seed's ids for the base tasks.
"""


def tasks() -> dict:
    """The task file's entries, {"TASK<id>": fields}."""
    out = {}
    for task_id, (name, kind, loss, process, train_split, val_split, lr) in _RELEASED.items():
        dataroot, features1, features2, train_file, val_file, seq, regions, batch, eval_batch = _DEMO[task_id]
        entry = dict(name=name, type=kind, loss=loss, process=process, task_id=task_id, dataroot=dataroot,
                     features_h5path1=features1, features_h5path2=features2,
                     train_annotations_jsonpath=train_file, val_annotations_jsonpath=val_file,
                     max_seq_length=seq, max_region_num=regions, batch_size=batch, eval_batch_size=eval_batch,
                     train_split=train_split, val_split=val_split, lr=lr, num_epoch=20)
        if task_id in (5, 6):
            entry["num_epoch"] = 10
        if task_id == 11:
            entry["start_iteration"] = 0
        out[f"TASK{task_id}"] = entry
    return out


def tasks_yaml() -> str:
    return TASKS_HEADER + yaml.safe_dump(tasks(), sort_keys=False, default_flow_style=False)


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream]])


def _scenes(folder: Path) -> dict[str, object]:
    """{feature-store key: Scene} of a base-world folder (its scenes.json)."""
    data = json.loads((folder / "scenes.json").read_text(encoding="utf-8"))
    return {key: Scene.from_json(scene) for key, scene in data.items()}


def _percent(value: float) -> float:
    return round(100.0 * float(value), 2)


def _majority(train_labels: list, eval_labels: list) -> dict:
    """Accuracy of always giving the commonest training label."""
    label = sorted(Counter(train_labels).items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0]
    return {"accuracy": _percent(np.mean([x == label for x in eval_labels])), "majority": label}


def _write_gzip_jsonl(path: Path, records: list[dict]) -> None:
    """JSON lines, gzip-compressed without a time stamp or file name (byte-identical per seed)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(_jsonl_text(records).encode("utf-8"))
    path.write_bytes(buffer.getvalue())


class _World:
    """What the base world offers the 12-in-1 part: its scenes and which split each picture is in."""

    def __init__(self, root: Path):
        from vilbert.data.files import read_jsonl
        from vilbert.safe_pickle import safe_load

        self.root = root
        self.vqa = _scenes(root / "vqa")
        self.vqa_split = {}
        for subtype in ("train2014", "val2014", "test2015"):
            data = json.loads((root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json").read_text())
            ids = sorted({q["image_id"] for q in data["questions"]})
            self.vqa_split[subtype] = [str(i) for i in ids]
        self.refer = _scenes(root / "refcoco")
        self.refs = safe_load(root / "refcoco" / "refcoco+" / "refs(unc).p")
        self.instances = json.loads((root / "refcoco" / "refcoco+" / "instances.json").read_text())
        self.refer_split = {}  # refcoco split -> image ids (str), in id order
        for ref in self.refs:
            self.refer_split.setdefault(ref["split"], set()).add(str(ref["image_id"]))
        self.refer_split = {split: sorted(ids, key=int) for split, ids in self.refer_split.items()}
        self.flickr = _scenes(root / "flickr30k")
        self.flickr_split = {}
        for split, name in captions.FLICKR_JSONLINE.items():
            records = read_jsonl(root / "flickr30k" / name)
            self.flickr_split[split] = [Path(record["img_path"]).stem for record in records]


def _make_nlvr2(root: Path, size: TwelveSize, seed: int) -> dict:
    rng = _rng(seed, "nlvr2")
    folder = root / "nlvr2"
    pictures = _Pictures(folder / "images", rng)
    labels, counts = {}, {}
    for split, pairs in (("train", size.nlvr2_train), ("dev", size.nlvr2_dev), ("test1", size.nlvr2_test)):
        balance = {True: 0, False: 0}
        records = []
        for pair in range(pairs):
            left, right = sample_scene(rng), sample_scene(rng)
            stem = f"{split}-{pair}-0"
            pictures.add(f"{stem}-img0", left)
            pictures.add(f"{stem}-img1", right)
            statements = formats.nlvr2_statements(rng, left, right, size.nlvr2_statements_per_pair, balance)
            for k, (sentence, truth) in enumerate(statements):
                records.append({"identifier": f"{stem}-{k}", "sentence": sentence, "label": str(truth),
                                "left_url": f"{stem}-img0.png", "right_url": f"{stem}-img1.png",
                                "writer": "demo", "synset": "shapes", "query": "shapes"})
        _write_jsonl(folder / f"{split}.json", records)
        labels[split] = [r["label"] for r in records]
        counts[split] = {"pairs": pairs, "statements": len(records)}
    _write_json(folder / "boxes.json", pictures.gt)
    _write_json(folder / "scenes.json", pictures.scenes)
    return {"counts": counts, "chance": {"NLVR2": _majority(labels["train"], labels["dev"])},
            "jobs": [(pictures.images_dir, folder / "boxes.json", folder / "features" / "regions.lmdb")]}


def _make_snli_ve(root: Path, world: _World, seed: int) -> dict:
    rng = _rng(seed, "snli_ve")
    folder = root / "visual_entailment"
    folder.mkdir(parents=True, exist_ok=True)
    labels, counts = {}, {}
    for split, name in (("train", "train"), ("val", "dev"), ("test", "test")):
        records = []
        for image_id in world.flickr_split[split]:
            scene = world.flickr[image_id]
            premise = captions.flickr_record(rng, scene, int(image_id))["sentences"][0]
            for k, (hypothesis, gold) in enumerate(formats.entailment_hypotheses(rng, scene)):
                records.append({"Flikr30kID": f"{image_id}.jpg", "captionID": f"{image_id}.jpg#0",
                                "pairID": f"{image_id}.jpg#0r{k}", "sentence1": premise, "sentence2": hypothesis,
                                "gold_label": gold, "annotator_labels": [gold]})
        _write_jsonl(folder / f"snli_ve_{name}.jsonl", records)
        labels[name] = [r["gold_label"] for r in records]
        counts[name] = {"images": len(world.flickr_split[split]), "hypotheses": len(records)}
    return {"counts": counts, "chance": {"VisualEntailment": _majority(labels["train"], labels["dev"])}, "jobs": []}


def _make_gqa(root: Path, size: TwelveSize, seed: int, image_numbers: list[int]) -> dict:
    from vilbert.data import gqa as reader

    rng = _rng(seed, "gqa")
    folder = root / "gqa"
    pictures = _Pictures(folder / "images", rng)
    counts, start, number = {}, 0, 1
    for part, count in (("train", size.gqa_train), ("val", size.gqa_val), ("testdev", size.gqa_testdev)):
        balancer = AnswerBalancer()  # each file balanced on its own, as GQA's balanced files
        questions = {}
        for image_number in image_numbers[start:start + count]:
            image_id = f"n{image_number}"
            scene = sample_scene(rng)
            pictures.add(image_id, scene)
            for q in formats.gqa_questions(rng, scene, size.gqa_questions_per_image, balancer):
                questions[f"{number:08d}"] = {
                    "imageId": image_id, "question": q.text, "answer": q.answer, "fullAnswer": formats.full_answer(q),
                    "isBalanced": True, "types": {"structural": "query" if q.answer_type == "other" else "verify",
                                                  "semantic": "attr", "detailed": q.question_type},
                    "groups": {"global": None, "local": q.template}, "annotations": {"question": {}, "answer": {},
                                                                                     "fullAnswer": {}},
                    "semantic": [], "semanticStr": "", "entailed": [], "equivalent": [f"{number:08d}"],
                }
                number += 1
        start += count
        _write_json(folder / f"{part}_balanced_questions.json", questions)
        counts[part] = {"images": count, "questions": len(questions)}
    _write_json(folder / "boxes.json", pictures.gt)
    _write_json(folder / "scenes.json", pictures.scenes)
    trainval, _ = reader.load_split(folder, "trainval")
    minval, _ = reader.load_split(folder, "minval")
    rates = _majority([r["answer"] for _, r in trainval] or [""], [r["answer"] for _, r in minval])
    return {"counts": counts, "chance": {"GQA": {**rates, "split": "minval"}},
            "jobs": [(pictures.images_dir, folder / "boxes.json", folder / "features" / "regions.lmdb")]}


def _make_genome(root: Path, size: TwelveSize, seed: int) -> dict:
    from vilbert.data import genome_qa as reader
    from vilbert.data import vqa as vqa_reader

    rng = _rng(seed, "genome")
    folder = root / "visual_genome"
    pictures = _Pictures(folder / "images", rng)
    balancer, images, qa_id = AnswerBalancer(), [], 1
    for image_id in range(1, size.genome_images + 1):
        scene = sample_scene(rng, min_objects=3)
        pictures.add(image_id, scene)
        qas = []
        for q in formats.genome_questions(rng, scene, size.genome_questions_per_image, balancer):
            qas.append({"qa_id": qa_id, "image_id": image_id, "question": q.text,
                        "answer": q.answer[0].upper() + q.answer[1:] + ".", "a_objects": [], "q_objects": []})
            qa_id += 1
        images.append({"id": image_id, "qas": qas})
    _write_json(folder / "question_answers.json", images)
    # 12-in-1 trains GenomeQA on VQA's head and answers: the vocabulary is VQA's (trainval).
    vqa_questions, _ = vqa_reader.load_split(root / "vqa", "trainval")
    label2ans = vqa_reader.build_answer_vocab(vqa_questions)
    if label2ans:
        vqa_reader.write_label2ans(folder / "cache" / "trainval_label2ans.json", label2ans)
    _write_json(folder / "boxes.json", pictures.gt)
    _write_json(folder / "scenes.json", pictures.scenes)
    records = reader.read_question_answers(folder / "question_answers.json")
    train, val = reader.split_records(records, "train"), reader.split_records(records, "val")
    known = set(label2ans)
    rates = _majority([r["answer"] for r in train if r["answer"] in known] or [""], [r["answer"] for r in val])
    counts = {"images": size.genome_images, "questions": len(records), "train": len(train), "val": len(val)}
    return {"counts": counts, "chance": {"GenomeQA": rates},
            "jobs": [(pictures.images_dir, folder / "boxes.json", folder / "features" / "regions.lmdb")]}


def _make_foil(root: Path, world: _World, seed: int) -> dict:
    rng = _rng(seed, "foil")
    folder = root / "Foil"
    folder.mkdir(parents=True, exist_ok=True)
    labels, counts, next_id = {}, {}, 1
    for name, subtype in (("train", "train2014"), ("test", "val2014")):
        images, annotations = [], []
        for image_id in world.vqa_split[subtype]:
            scene = world.vqa[image_id]
            images.append({"id": int(image_id), "file_name": f"{image_id}.png", "height": scene.height,
                           "width": scene.width})
            for caption in formats.foil_captions(rng, scene):
                annotations.append({"id": next_id, "image_id": int(image_id), "foil_id": next_id, **caption})
                next_id += 1
        _write_json(folder / f"foilv1.0_{name}_2017.json", {"info": {"description": "demo world FOIL-format"},
                                                             "licenses": [], "images": images,
                                                             "annotations": annotations})
        labels[name] = [a["foil"] for a in annotations]
        counts[name] = {"images": len(images), "captions": len(annotations)}
    return {"counts": counts, "chance": {"Foil": _majority(labels["train"], labels["test"])}, "jobs": []}


def _make_coco_retrieval(root: Path, world: _World, seed: int) -> dict:
    rng = _rng(seed, "coco_retrieval")
    folder = root / "cocoRetrieval"
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, subtype in (("train", "train2014"), ("val", "val2014"), ("test", "test2015")):
        ids = world.vqa_split[subtype]
        _write_jsonl(folder / captions.FLICKR_JSONLINE[split],
                     [captions.flickr_record(rng, world.vqa[i], int(i)) for i in ids])
        counts[split] = {"images": len(ids), "captions": 5 * len(ids)}
    images = len(world.vqa_split["test2015"])
    recall = {f"R@{k}": _percent(min(1.0, k / images)) for k in (1, 5, 10)}
    return {"counts": counts, "chance": {"RetrievalCOCO": {**recall, "images": images}}, "jobs": []}


def _coco_hard_negatives(root: Path) -> None:
    """cocoRetrieval/hard_negative.json over VQA's store (as make._hard_negatives for Flickr30k)."""
    from vilbert.data.retrieval import HARD_NEGATIVE_FILE, build_hard_negatives

    folder, annotations = root / "cocoRetrieval", captions.FLICKR_JSONLINE["train"]
    pool = build_hard_negatives(folder / annotations, root / "vqa" / "features" / "regions.lmdb")
    pool.update(annotations=annotations, features="../vqa/features/regions.lmdb")
    _write_json(folder / HARD_NEGATIVE_FILE, pool)


def _object_index(world: _World) -> dict[int, tuple[str, int]]:
    """refcoco+ annotation id -> (image id, index of its object in the scene)."""
    out, seen = {}, Counter()
    for ann in world.instances["annotations"]:  # written in object order, picture by picture
        image = str(ann["image_id"])
        out[ann["id"]] = (image, seen[image])
        seen[image] += 1
    return out


def _make_refer_variants(root: Path, world: _World, seed: int) -> dict:
    """RefCOCO (unc) and RefCOCOg (umd) refs on RefCOCO+'s pictures, objects and splits."""
    detected = json.loads((root / "refcoco" / "boxes_detections.json").read_text())
    objects = _object_index(world)
    out = {"counts": {}, "chance": {}, "jobs": []}
    for name, split_by, express in (("refcoco", "unc", formats.refcoco_expression),
                                    ("refcocog", "umd", formats.refcocog_expression)):
        rng = _rng(seed, name)
        refs, sent_id = [], 0
        for ref in world.refs:
            image, index = objects[ref["ann_id"]]
            scene = world.refer[image]
            sentences = []
            for _ in ref["sentences"]:
                text = express(rng, scene, index)
                if text not in (s["sent"] for s in sentences):
                    sentences.append({"tokens": text.split(), "raw": text, "sent_id": sent_id, "sent": text})
                    sent_id += 1
            split = ref["split"] if split_by == "unc" or ref["split"] in ("train", "val") else "test"
            refs.append({**ref, "split": split, "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences]})
        folder = root / "refcoco" / name
        folder.mkdir(parents=True, exist_ok=True)
        # Protocol 2 and plain dicts, lists, str and int only, as the refer toolkit's files.
        (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
        _write_json(folder / "instances.json", world.instances)
        out["counts"][name] = Counter(r["split"] for r in refs)
        out["chance"][name] = chance.refcoco_rates(refs, world.instances, detected)
    return out


def _make_entities(root: Path, world: _World, seed: int) -> dict:
    """Flickr30k Entities files for the base world's Flickr30k pictures (FlickrGrounding)."""
    rng = _rng(seed, "entities")
    folder = root / "flickr30k"
    (folder / "Sentences").mkdir(parents=True, exist_ok=True)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    next_id, random_box, counts = 1, [], {}
    for split in ("train", "val", "test"):
        ids = world.flickr_split[split]
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        phrases = 0
        for image_id in ids:
            scene = world.flickr[image_id]
            phrase_ids = list(range(next_id, next_id + len(scene.objects)))
            scene_id = next_id + len(scene.objects)
            next_id = scene_id + 1
            lines = formats.entities_sentences(rng, scene, phrase_ids, scene_id)
            (folder / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (folder / "Annotations" / f"{image_id}.xml").write_text(
                formats.entities_xml(scene, f"{image_id}.png", phrase_ids, scene_id), encoding="utf-8")
            boxes = scene.boxes()
            hits = box_iou(boxes, boxes) > 0.5  # the store holds the ground-truth boxes
            for line in lines:
                for k, pid in enumerate(phrase_ids):
                    mentions = line.count(f"[/EN#{pid}/")
                    phrases += mentions
                    if split == "val":
                        random_box += [hits[k].mean()] * mentions
        counts[split] = {"images": len(ids), "phrases": phrases}
    return {"counts": counts, "jobs": [],
            "chance": {"FlickrGrounding": {"accuracy": _percent(np.mean(random_box)), "rule": "random_box"}}}


def _make_visual7w(root: Path, size: TwelveSize, seed: int) -> dict:
    rng = _rng(seed, "visual7w")
    folder = root / "visual7w"
    pictures = _Pictures(folder / "images", rng, with_detections=True)
    boxes, images, counts = [], [], {}
    box_id, qa_id, image_id = 1, 1, 1
    for split, count in (("train", size.v7w_train), ("val", size.v7w_val), ("test", size.v7w_test)):
        questions = 0
        for _ in range(count):
            scene = sample_scene(rng, min_objects=4, max_objects=4)
            pictures.add(f"v7w_{image_id}", scene)
            ids = list(range(box_id, box_id + len(scene.objects)))  # box ids in object order
            box_id += len(scene.objects)
            for obj, b in zip(scene.objects, ids):
                x1, y1, x2, y2 = obj.box
                boxes.append({"box_id": b, "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1,
                              "name": obj.class_name})
            qa_pairs = []
            for target in rng.choice(len(ids), size=size.v7w_questions_per_image, replace=False):
                target = int(target)
                choices = [int(ids[k]) for k in rng.permutation(len(ids)) if k != target]
                qa_pairs.append({"qa_id": qa_id, "image_id": image_id, "type": "which",
                                 "question": formats.pointing_question(rng, scene, target),
                                 "answer": ids[target], "multiple_choices": choices})
                qa_id += 1
            images.append({"image_id": image_id, "split": split, "filename": f"v7w_{image_id}.jpg",
                           "height": scene.height, "width": scene.width, "qa_pairs": qa_pairs})
            questions += len(qa_pairs)
            image_id += 1
        counts[split] = {"images": count, "questions": questions}
    _write_json(folder / "dataset_v7w_pointing.json", {"boxes": boxes, "images": images})
    _write_json(folder / "boxes_gt.json", pictures.gt)
    _write_json(folder / "boxes_detections.json", pictures.detected)
    _write_json(folder / "scenes.json", pictures.scenes)
    jobs = [(pictures.images_dir, folder / "boxes_detections.json", folder / "features" / "detections.lmdb"),
            (pictures.images_dir, folder / "boxes_gt.json", folder / "features" / "gt.lmdb")]
    return {"counts": counts, "chance": {"Visual7w": {"accuracy": 25.0, "candidates": 4}}, "jobs": jobs}


def _make_guesswhat(root: Path, world: _World, size: TwelveSize, seed: int) -> dict:
    """GuessWhat?! games on RefCOCO+'s pictures; object ids are its annotation ids (in object order,
    so the ground-truth store holds each picture's objects in the order of their ids)."""
    rng = _rng(seed, "guesswhat")
    folder = root / "guesswhat"
    folder.mkdir(parents=True, exist_ok=True)
    anns: dict[str, list[dict]] = {}
    for ann in world.instances["annotations"]:
        anns.setdefault(str(ann["image_id"]), []).append(ann)
    answers, candidates, counts, game_id, question_id = {}, {}, {}, 1, 1
    for split, parts in (("train", ("train",)), ("valid", ("val",)), ("test", ("testA", "testB"))):
        games = []
        for image_id in sorted((i for p in parts for i in world.refer_split.get(p, [])), key=int):
            scene = world.refer[image_id]
            objects = [{"id": a["id"], "category": obj.class_name, "category_id": obj.class_id, "bbox": a["bbox"],
                        "area": a["area"], "segment": a["segmentation"], "iscrowd": False}
                       for a, obj in zip(anns[image_id], scene.objects)]
            targets = rng.choice(len(objects), size=min(size.games_per_image, len(objects)), replace=False)
            for target in (int(t) for t in targets):
                qas = []
                for question, answer in formats.guesswhat_dialog(rng, scene, target):
                    qas.append({"id": question_id, "question": f"{question}?", "answer": answer})
                    question_id += 1
                games.append({"id": game_id, "object_id": objects[target]["id"], "status": "success",
                              "questioner_id": 0, "timestamp": "2019-01-01 00:00:00", "objects": objects,
                              "image": {"id": int(image_id), "width": scene.width, "height": scene.height,
                                        "file_name": f"{image_id}.png",
                                        "coco_url": f"https://demo-world.invalid/coco/{image_id}.png"},
                              "qas": qas})
                game_id += 1
        _write_gzip_jsonl(folder / f"guesswhat.{split}.jsonl.gz", games)
        answers[split] = [qa["answer"] for g in games for qa in g["qas"]]
        candidates[split] = [1.0 / len(g["objects"]) for g in games]
        counts[split] = {"games": len(games), "questions": len(answers[split])}
    pointing = {"accuracy": _percent(np.mean(candidates["valid"])), "rule": "random_candidate"}
    return {"counts": counts, "jobs": [],
            "chance": {"GuessWhat": _majority(answers["train"], answers["valid"]), "GuessWhatPointing": pointing}}


def _answer_pool() -> tuple[list[str], dict[str, str]]:
    """Every answer phrasing of VisDial (>= 100) and the canonical answer of each."""
    from .world import COLOURS, SHAPES

    canonical = ["yes", "no", *COLOURS, *SHAPES, *[str(n) for n in range(6)]]
    pool, meaning = [], {}
    for answer in canonical:
        for text in formats.answer_phrasings(answer):
            if text not in meaning:
                pool.append(text)
                meaning[text] = answer
    return pool, meaning


def _visdial_round(rng, question, pool: list[str], meaning: dict, question_index: int,
                   answer_index: dict) -> tuple[dict, list[float]]:
    phrasings = formats.answer_phrasings(question.answer)
    truth = phrasings[int(rng.integers(len(phrasings)))]
    others = [a for a in pool if a != truth]
    options = [truth] + [others[int(k)] for k in rng.choice(len(others), size=DIALOG_OPTIONS - 1, replace=False)]
    order = rng.permutation(DIALOG_OPTIONS)
    options = [options[int(k)] for k in order]
    entry = {"question": question_index, "answer": answer_index[truth],
             "answer_options": [answer_index[a] for a in options], "gt_index": int(np.flatnonzero(order == 0)[0])}
    relevance = [1.0 if meaning[a] == question.answer else 0.0 for a in options]
    return entry, relevance


def _expected_ndcg(relevance: list[float]) -> float:
    """NDCG of a uniformly random ranking, in expectation: every position holds the mean relevance,
    and the ideal DCG is fixed (NDCG@K, K = options of nonzero relevance, as the official metric)."""
    rel = np.sort(np.asarray(relevance, dtype=np.float64))[::-1]
    k = int((rel > 0).sum())
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    return float(rel.mean() * discounts.sum() / (rel[:k] * discounts).sum())


def _make_visdial(root: Path, world: _World, seed: int) -> dict:
    rng = _rng(seed, "visdial")
    folder = root / "visual_dialog"
    folder.mkdir(parents=True, exist_ok=True)
    pool, meaning = _answer_pool()
    answer_index = {a: k for k, a in enumerate(pool)}
    counts, dense, ndcgs = {}, [], []
    for split, subtype in (("train", "train2014"), ("val", "val2014"), ("test", "test2015")):
        balancer, questions, question_index, dialogs = AnswerBalancer(), [], {}, []
        for image_id in world.vqa_split[subtype]:
            scene = world.vqa[image_id]
            rounds = DIALOG_ROUNDS if split != "test" else int(rng.integers(1, DIALOG_ROUNDS + 1))
            dense_round = int(rng.integers(rounds))
            entries = []
            for r, question in enumerate(formats.dialog_questions(rng, scene, rounds, balancer)):
                text = question.text[0].lower() + question.text[1:].rstrip("?")
                if text not in question_index:
                    question_index[text] = len(questions)
                    questions.append(text)
                entry, relevance = _visdial_round(rng, question, pool, meaning, question_index[text], answer_index)
                if split == "test" and r == rounds - 1:
                    entry = {"question": entry["question"], "answer_options": entry["answer_options"]}
                elif split == "test":
                    entry = {"question": entry["question"], "answer": entry["answer"]}
                elif split == "val" and r == dense_round:
                    dense.append({"image_id": int(image_id), "round_id": r + 1, "gt_relevance": relevance})
                    ndcgs.append(_expected_ndcg(relevance))
                entries.append(entry)
            dialogs.append({"image_id": int(image_id), "caption": formats.dialog_caption(rng, scene),
                            "dialog": entries})
        _write_json(folder / f"visdial_1.0_{split}.json",
                    {"version": "1.0", "split": split, "data": {"questions": questions, "answers": pool,
                                                                "dialogs": dialogs}})
        counts[split] = {"dialogs": len(dialogs), "rounds": sum(len(d["dialog"]) for d in dialogs)}
    _write_json(folder / "visdial_1.0_val_dense_annotations.json", dense)
    # A random ranking of 100 options: the right answer's rank is uniform over 1..100.
    ranks = np.arange(1, DIALOG_OPTIONS + 1)
    rates = {"MRR": _percent(np.mean(1.0 / ranks)), **{f"R@{k}": _percent(k / DIALOG_OPTIONS) for k in (1, 5, 10)},
             "mean_rank": float(ranks.mean()), "NDCG": _percent(np.mean(ndcgs)) if ndcgs else None}
    return {"counts": counts, "chance": {"VisualDialog": rates}, "jobs": []}


def make_twelve(root, seed: int, size: TwelveSize, extract: bool = True, progress: bool = False, say=print) -> dict:
    """Write the 12-in-1 part into a base world at `root` (see the module docstring); adds the new
    tasks' chance rates to CHANCE.json. Returns {"sizes", "counts"} for world.json."""
    root = Path(root)
    world = _World(root)
    ids_rng = _rng(seed, "ids")
    gqa_numbers = _unique_ids(ids_rng, 1, 10**7, size.gqa_train + size.gqa_val + size.gqa_testdev)
    parts = {
        "nlvr2": _make_nlvr2(root, size, seed),
        "visual_entailment": _make_snli_ve(root, world, seed),
        "gqa": _make_gqa(root, size, seed, gqa_numbers),
        "visual_genome": _make_genome(root, size, seed),
        "Foil": _make_foil(root, world, seed),
        "cocoRetrieval": _make_coco_retrieval(root, world, seed),
        "refer": _make_refer_variants(root, world, seed),
        "flickr30k_entities": _make_entities(root, world, seed),
        "visual7w": _make_visual7w(root, size, seed),
        "guesswhat": _make_guesswhat(root, world, size, seed),
        "visual_dialog": _make_visdial(root, world, seed),
    }
    for name, part in parts.items():
        say(f"{name}: {json.dumps(part['counts'], sort_keys=True)}")
    if extract:
        for part in parts.values():
            for images_dir, boxes_file, store in part["jobs"]:
                _extract(images_dir, boxes_file, store, progress)
        _coco_hard_negatives(root)
    rates = json.loads((root / "CHANCE.json").read_text(encoding="utf-8"))
    for part in parts.values():
        rates.update(part["chance"])
    _write_json(root / "CHANCE.json", rates, indent=2)
    (root / "vilbert_tasks.yml").write_text(tasks_yaml(), encoding="utf-8")
    return {"sizes": asdict(size), "counts": {name: part["counts"] for name, part in parts.items()}}
