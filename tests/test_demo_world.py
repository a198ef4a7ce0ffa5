"""The demo world: determinism, the public formats of every file, features for every id, a probe.

One tiny world (a few hundred pictures) is written per session with the real extractor; a second
with the same seed checks byte-identical files and identical features, a third (no features) with
another seed checks that seeds matter.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from vilbert.demo.make import TASKS, WorldSize, make_world
from vilbert.demo.vqa import normalize_answer
from vilbert.demo.world import NUM_CLASSES, QUADRANTS, SHAPES, box_iou

TINY = WorldSize(
    concap_train=300, concap_val=60,
    vqa_train=12, vqa_val=6, vqa_test=4,
    vcr_train=10, vcr_val=6,
    refcoco_train=10, refcoco_val=6, refcoco_testA=3, refcoco_testB=3,
    flickr_train=12, flickr_val=6, flickr_test=6,
)


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "seed0"
    make_world(root, seed=0, size=TINY, say=_quiet)
    return root


@pytest.fixture(scope="module")
def world_again(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_again") / "seed0"
    make_world(root, seed=0, size=TINY, say=_quiet)
    return root


def _files(root: Path) -> dict[str, Path]:
    """Every file of a world except the LMDB stores (compared through the reader)."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and ".lmdb" not in p.parent.name and "cache" not in p.parts}


def test_same_seed_gives_identical_files_and_features(world, world_again):
    from vilbert.features import FeatureReader

    first, second = _files(world), _files(world_again)
    assert first.keys() == second.keys()
    different = [name for name in first if first[name].read_bytes() != second[name].read_bytes()]
    assert different == []
    stores = sorted(str(p.relative_to(world)) for p in world.rglob("*.lmdb"))
    assert len(stores) == 8
    for store in stores:
        a, b = FeatureReader(world / store), FeatureReader(world_again / store)
        assert a.image_ids() == b.image_ids()
        for image_id in a.image_ids():
            x, y = a[image_id], b[image_id]
            assert np.array_equal(x.features, y.features) and np.array_equal(x.boxes, y.boxes)
            assert np.array_equal(x.cls_prob, y.cls_prob)


def test_another_seed_gives_other_files(world, tmp_path):
    other = tmp_path / "seed1"
    make_world(other, seed=1, size=TINY, extract=False, say=_quiet)
    for name in ("vqa/v2_mscoco_train2014_annotations.json", "vcr/train.jsonl",
                 "refcoco/refcoco+/refs(unc).p", "flickr30k/all_data_final_test_set0_2014.jsonline",
                 "conceptual_captions/Train_GCC-training.tsv", "vqa/boxes.json"):
        assert (world / name).read_bytes() != (other / name).read_bytes(), name


def test_keeps_the_same_world_and_refuses_another_without_overwrite(world):
    before = {name: path.stat().st_mtime_ns for name, path in _files(world).items()}
    info = make_world(world, seed=0, size=TINY, say=_quiet)  # the same world: nothing to do
    assert info["seed"] == 0 and {n: p.stat().st_mtime_ns for n, p in _files(world).items()} == before
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_world(world, seed=1, size=TINY, extract=False, say=_quiet)


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_vqa_files_have_the_official_layout(world):
    root = world / "vqa"
    for subtype, images in (("train2014", 12), ("val2014", 6), ("test2015", 4), ("test-dev2015", 2)):
        data = _load(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json")
        assert set(data) == {"info", "task_type", "data_type", "license", "data_subtype", "questions"}
        assert data["data_subtype"] == subtype and data["task_type"] == "Open-Ended" and data["data_type"] == "mscoco"
        questions = data["questions"]
        assert len({q["image_id"] for q in questions}) == images
        for q in questions:
            assert set(q) == {"image_id", "question", "question_id"}
            assert isinstance(q["image_id"], int) and isinstance(q["question_id"], int)
            assert q["question_id"] // 1000 == q["image_id"] and q["question"].endswith("?")
        assert len({q["question_id"] for q in questions}) == len(questions)
    test_ids = {q["question_id"] for q in _load(root / "v2_OpenEnded_mscoco_test2015_questions.json")["questions"]}
    dev_ids = {q["question_id"] for q in _load(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json")["questions"]}
    assert dev_ids < test_ids
    assert not list(root.glob("*test*annotations*"))

    for subtype in ("train2014", "val2014"):
        data = _load(root / f"v2_mscoco_{subtype}_annotations.json")
        assert set(data) == {"info", "license", "data_subtype", "annotations", "data_type"}
        questions = {q["question_id"]: q for q in _load(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json")["questions"]}
        assert {a["question_id"] for a in data["annotations"]} == set(questions)
        for a in data["annotations"]:
            assert set(a) == {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type", "question_id"}
            assert a["image_id"] == questions[a["question_id"]]["image_id"]
            assert a["answer_type"] in ("yes/no", "number", "other")
            assert len(a["answers"]) == 10 and [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            for x in a["answers"]:
                assert set(x) == {"answer", "answer_confidence", "answer_id"} and isinstance(x["answer"], str)
                assert x["answer_confidence"] in ("yes", "maybe", "no")
            votes = Counter(normalize_answer(x["answer"]) for x in a["answers"])
            (top, top_votes), *rest = votes.most_common()
            assert top == a["multiple_choice_answer"] and top_votes >= 3
            assert not rest or rest[0][1] < top_votes
            if a["answer_type"] == "yes/no":
                assert a["multiple_choice_answer"] in ("yes", "no")
            if a["answer_type"] == "number":
                assert a["multiple_choice_answer"].isdigit()


def test_vqa_answers_match_the_scenes(world):
    """Spot-check the meaning: colour questions name the colour of the object they describe."""
    scenes = _load(world / "vqa" / "scenes.json")
    questions = {q["question_id"]: q for q in _load(world / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json")["questions"]}
    checked = 0
    for a in _load(world / "vqa" / "v2_mscoco_train2014_annotations.json")["annotations"]:
        text = questions[a["question_id"]]["question"]
        objects = scenes[str(a["image_id"])]["objects"]
        if text == "How many objects are there?":
            assert a["multiple_choice_answer"] == str(len(objects))
            checked += 1
        elif text.startswith("What color is the ") and " above " not in text:
            words = text[len("What color is the "):-1].split()
            hits = [o for o in objects if o["shape"] == words[-1] and (len(words) == 1 or o["size"] == words[0])]
            assert len(hits) == 1 and hits[0]["color"] == a["multiple_choice_answer"]
            checked += 1
    assert checked > 0


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


VCR_FIELDS = {"movie", "objects", "interesting_scores", "answer_likelihood", "img_fn", "metadata_fn",
              "answer_orig", "question_orig", "rationale_orig", "question", "answer_choices", "answer_label",
              "rationale_choices", "rationale_label", "img_id", "question_number", "annot_id"}


def test_vcr_jsonl_has_the_vcr_layout(world):
    from vilbert.features import FeatureReader

    gt = FeatureReader(world / "vcr" / "features" / "gt.lmdb")
    scenes = _load(world / "vcr" / "scenes.json")
    for split, offset in (("train", 0), ("val", 1000000)):
        records = _jsonl(world / "vcr" / f"{split}.jsonl")
        assert len({r["annot_id"] for r in records}) == len(records)
        for r in records:
            assert set(r) == VCR_FIELDS
            assert r["img_id"].startswith(split + "-") and r["annot_id"].startswith(split + "-")
            key = int(r["img_id"].split("-")[1]) + offset
            assert r["img_fn"] == f"demo_world/{key}.png" and (world / "vcr" / "vcr1images" / r["img_fn"]).is_file()
            metadata = _load(world / "vcr" / "vcr1images" / r["metadata_fn"])
            assert metadata["names"] == r["objects"] and len(metadata["boxes"][0]) == 5
            assert (metadata["width"], metadata["height"]) == (gt[key].image_w, gt[key].image_h)
            # objects are in the order of the ground-truth boxes, one name per box, shapes unique
            assert len(r["objects"]) == len(gt[key].boxes) == len(set(r["objects"]))
            assert all(name in SHAPES for name in r["objects"])
            assert len(r["answer_choices"]) == 4 and len(r["rationale_choices"]) == 4
            assert r["answer_label"] in range(4) and r["rationale_label"] in range(4)
            assert len({json.dumps(c) for c in r["answer_choices"]}) == 4
            assert len({json.dumps(c) for c in r["rationale_choices"]}) == 4
            for tokens in [r["question"], *r["answer_choices"], *r["rationale_choices"]]:
                refs = [t for t in tokens if isinstance(t, list)]
                assert refs and all(isinstance(t, (str, list)) for t in tokens)
                assert all(isinstance(i, int) and 0 <= i < len(r["objects"]) for ref in refs for i in ref)
            # the right answer is true of the scene: the referred object's colour or quadrant
            obj = scenes[str(key)]["objects"][r["question"][-2][0] if r["question"][0] == "What" else r["question"][2][0]]
            answer = " ".join(t for t in r["answer_choices"][r["answer_label"]] if isinstance(t, str))
            if r["question"][0] == "What":
                assert answer == f"is {obj['color']} ."
            else:
                row, col = obj["grid_row"], obj["grid_col"]
                assert answer == f"is in the {QUADRANTS[2 * (row >= 2) + (col >= 2)]} ."


def test_refcoco_files_have_the_refer_toolkit_layout(world):
    from vilbert.safe_pickle import safe_load

    folder = world / "refcoco" / "refcoco+"
    raw = (folder / "refs(unc).p").read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2, as the toolkit's file
    refs = safe_load(raw)
    instances = _load(folder / "instances.json")
    assert set(instances) == {"info", "licenses", "images", "annotations", "categories"}
    assert [c["id"] for c in instances["categories"]] == list(range(1, NUM_CLASSES))
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    for im in instances["images"]:
        assert set(im) == {"id", "file_name", "height", "width"} and (world / "refcoco" / "images" / im["file_name"]).is_file()
    for a in instances["annotations"]:
        assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and a["image_id"] in images and 0 < a["area"] <= w * h
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    sent_ids = []
    for r in refs:
        assert set(r) == {"ref_id", "ann_id", "image_id", "category_id", "split", "sent_ids", "file_name", "sentences"}
        assert anns[r["ann_id"]]["image_id"] == r["image_id"] and anns[r["ann_id"]]["category_id"] == r["category_id"]
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]] and len(r["sentences"]) >= 1
        for s in r["sentences"]:
            assert set(s) == {"tokens", "raw", "sent_id", "sent"} and s["tokens"] == s["sent"].split()
            assert s["raw"].lower() == s["sent"]
            assert not {"left", "right", "top", "bottom", "above", "below"} & set(s["tokens"])  # RefCOCO+ rule
        sent_ids += r["sent_ids"]
    assert len(sent_ids) == len(set(sent_ids))


def test_refcoco_expressions_pick_out_their_object(world):
    from vilbert.safe_pickle import safe_load

    scenes = _load(world / "refcoco" / "scenes.json")
    refs = safe_load(world / "refcoco" / "refcoco+" / "refs(unc).p")
    anns = {a["id"]: a for a in _load(world / "refcoco" / "refcoco+" / "instances.json")["annotations"]}
    size_words = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
    for r in refs:
        objects = scenes[str(r["image_id"])]["objects"]
        x, y, w, h = anns[r["ann_id"]]["bbox"]
        target = [o for o in objects if o["box"] == [x, y, x + w, y + h]]
        assert len(target) == 1
        for s in r["sentences"]:
            words = [t for t in s["tokens"] if t != "the"]
            def fits(o):
                return all(
                    (t in size_words and o["size"] == size_words[t]) or o["color"] == t or o["shape"] == t
                    or t in ("one", "shape", "thing") for t in words
                )
            assert [o for o in objects if fits(o)] == target, s["sent"]


def test_refcoco_detections_are_imperfect_but_cover_every_object(world):
    from vilbert.features import FeatureReader

    det = FeatureReader(world / "refcoco" / "features" / "detections.lmdb")
    gt = FeatureReader(world / "refcoco" / "features" / "gt.lmdb")
    exact = 0
    for image_id in gt.image_ids():
        iou = box_iou(det[image_id].boxes, gt[image_id].boxes)  # (detections, objects)
        assert (iou.max(axis=0) >= 0.6).all()  # every object has a well-placed detection
        assert len(det[image_id].boxes) > len(gt[image_id].boxes)  # plus poor and distractor boxes
        exact += int((iou > 0.999).sum())
        assert det[image_id].cls_prob.shape == (len(det[image_id].boxes), NUM_CLASSES)
    assert exact < len(gt.image_ids())  # jittered, not copies of the true boxes


def test_flickr_and_concap_files(world):
    seen = set()
    for split, count in (("train", 12), ("val_set0", 6), ("test_set0", 6)):
        records = _jsonl(world / "flickr30k" / f"all_data_final_{split}_2014.jsonline")
        assert len(records) == count
        for r in records:
            assert set(r) == {"sentences", "img_path", "id"} and isinstance(r["id"], int)
            assert r["img_path"] == f"{r['id']}.png" and (world / "flickr30k" / "images" / r["img_path"]).is_file()
            assert len(r["sentences"]) == 5 and len(set(r["sentences"])) == 5
            assert all(s[0].isupper() and s.endswith(".") for s in r["sentences"])
            seen.add(r["id"])
    assert len(seen) == 24
    hard = _load(world / "flickr30k" / "hard_negative.json")
    assert set(hard["neighbours"]) == {str(r["id"]) for r in _jsonl(world / "flickr30k" / "all_data_final_train_2014.jsonline")}

    folder = world / "conceptual_captions"
    ids = set()
    for name, count in (("Train_GCC-training.tsv", 300), ("Validation_GCC-1.1.0-Validation.tsv", 60)):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) == count
        for line in lines:
            caption, url = line.split("\t")
            assert caption == caption.lower() and not caption.endswith(".") and url.startswith("https://")
            ids.add(zlib.crc32(url.encode()) & 0xFFFFFFFF)
    assert len(ids) == 360


def test_every_annotated_image_has_features(world):
    from vilbert.demo.check import annotated_ids, missing_features

    named = annotated_ids(world)
    assert len(named) == 8 and all(named.values())
    assert missing_features(world) == {store: [] for store in named}


def test_stores_hold_the_boxes_files(world):
    """Boxes and cls_prob in every store are those of the boxes file it was extracted from."""
    from vilbert.features import FeatureReader

    pairs = [("vqa/boxes.json", "vqa/features/regions.lmdb"),
             ("vcr/boxes_detections.json", "vcr/features/detections.lmdb"),
             ("refcoco/boxes_gt.json", "refcoco/features/gt.lmdb"),
             ("conceptual_captions/boxes_validation.json", "conceptual_captions/features/validation.lmdb")]
    for boxes_file, store in pairs:
        boxes = _load(world / boxes_file)
        reader = FeatureReader(world / store)
        assert sorted(boxes) == sorted(reader.image_ids())
        for image_id, entry in boxes.items():
            item = reader[image_id]
            assert np.allclose(item.boxes, entry["boxes"], atol=1e-4)
            assert np.allclose(item.cls_prob, entry["cls_prob"], atol=2e-3)  # stored as float16
            assert item.features.shape == (len(entry["boxes"]) + 1, 2048)


def test_probe_recovers_colour_and_shape(world):
    from vilbert.demo.check import probe

    result = probe(world)
    assert result["train_boxes"] > 800 and result["test_boxes"] > 150
    assert result["color"] >= 95.0 and result["shape"] >= 95.0, result


def test_tasks_file_loads_and_every_text_fits(world, minilm_dir):
    from transformers import BertTokenizerFast

    from vilbert.safe_pickle import safe_load
    from vilbert.tasks.config import load_task_configs

    original_fields = {"name", "type", "loss", "task_id", "dataroot", "features_h5path1", "features_h5path2",
                       "train_annotations_jsonpath", "val_annotations_jsonpath", "max_seq_length",
                       "max_region_num", "batch_size", "eval_batch_size", "train_split", "val_split", "lr", "num_epoch"}
    raw = yaml.safe_load((world / "vlbert_tasks.yml").read_text())
    assert list(raw) == ["TASK1", "TASK6", "TASK7", "TASK9", "TASK11"]
    assert all(set(entry) == original_fields for entry in raw.values())
    configs = load_task_configs(world / "vlbert_tasks.yml")
    assert sorted(configs) == [1, 6, 7, 9, 11]
    for config in configs.values():
        assert Path(config.dataroot).is_dir() and Path(config.features_h5path1).is_dir()
        for path in (config.features_h5path2, config.train_annotations_jsonpath, config.val_annotations_jsonpath):
            assert path is None or Path(path).exists()

    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_dir))
    length = lambda *texts: len(tokenizer(*texts)["input_ids"])  # noqa: E731  ([CLS] and [SEP]s included)
    vqa = [q["question"] for f in (world / "vqa").glob("*_questions.json") for q in _load(f)["questions"]]
    assert max(length(q) for q in vqa) <= TASKS["TASK1"]["max_seq_length"]
    longest_q2a = longest_qa2r = 0
    for r in _jsonl(world / "vcr" / "train.jsonl") + _jsonl(world / "vcr" / "val.jsonl"):
        text = lambda tokens: " ".join(" and ".join(r["objects"][i] for i in t) if isinstance(t, list) else t for t in tokens)  # noqa: E731
        question = text(r["question"])
        for answer in r["answer_choices"]:
            longest_q2a = max(longest_q2a, length(question, text(answer)))
        for rationale in r["rationale_choices"]:
            longest_qa2r = max(longest_qa2r, length(question + " " + text(r["answer_choices"][r["answer_label"]]), text(rationale)))
    assert longest_q2a <= TASKS["TASK6"]["max_seq_length"] and longest_qa2r <= TASKS["TASK7"]["max_seq_length"]
    captions = [s for f in (world / "flickr30k").glob("*.jsonline") for r in _jsonl(f) for s in r["sentences"]]
    assert max(length(c) for c in captions) <= TASKS["TASK9"]["max_seq_length"]
    sentences = [s["raw"] for r in safe_load(world / "refcoco" / "refcoco+" / "refs(unc).p") for s in r["sentences"]]
    assert max(length(s) for s in sentences) <= TASKS["TASK11"]["max_seq_length"]


def test_region_budgets_fit_the_stores(world):
    from vilbert.features import FeatureReader

    for key, stores in (("TASK1", ["vqa/features/regions.lmdb"]), ("TASK9", ["flickr30k/features/regions.lmdb"]),
                        ("TASK6", ["vcr/features/detections.lmdb", "vcr/features/gt.lmdb"]),
                        ("TASK11", ["refcoco/features/detections.lmdb", "refcoco/features/gt.lmdb"])):
        readers = [FeatureReader(world / s) for s in stores]
        most = max(sum(len(r[i].boxes) for r in readers) for i in readers[0].image_ids())
        assert 1 + most <= TASKS[key]["max_region_num"], (key, most)


def test_chance_file(world):
    chance = _load(world / "CHANCE.json")
    assert set(chance) == {"VQA", "VCR_Q-A", "VCR_QA-R", "VCR_Q-AR", "refcoco+", "RetrievalFlickr30k",
                           "RetrievalFlickr30k_zero_shot", "alignment"}
    assert chance["VCR_Q-A"]["accuracy"] == 25.0 and chance["alignment"]["accuracy"] == 50.0
    assert chance["RetrievalFlickr30k"]["R@1"] == pytest.approx(100 / 6, abs=0.01)
    vqa = chance["VQA"]
    assert 0 < vqa["accuracy"] < vqa["oracle"] and vqa["majority_answer"] in ("yes", "no")
    ref = chance["refcoco+"]
    assert ref["accuracy"] == max(ref["rules"].values()) and ref["upper_bound"] >= ref["accuracy"]
    world_info = _load(world / "world.json")
    assert len(world_info["classes"]) == NUM_CLASSES and world_info["classes"][0] == "background"


def test_world_builds_every_task_dataset(world, minilm_dir):
    """The project's own readers load every split the task file names, and batches collate."""
    from transformers import BertTokenizerFast

    from vilbert.tasks.registry import build_tasks

    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_dir))
    tasks = build_tasks("1,6-7,9,11", world / "vlbert_tasks.yml")
    for task in tasks.values():
        for split in (task.config.train_split, task.config.val_split):
            dataset = task.dataset(split, tokenizer)
            assert len(dataset) > 0
            batch = next(iter(task.loader(dataset, train=split == task.config.train_split, batch_size=2)))
            assert batch["input_ids"].shape[-1] == task.config.max_seq_length
