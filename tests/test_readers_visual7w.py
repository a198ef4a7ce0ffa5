"""Visual7W pointing (V-logit-mc): the official json, candidates among the ground-truth boxes (first
in the region list), IoU targets, the Visual7W toolkit's result records, one-line errors."""

import json

import numpy as np
import pytest
import torch

from _taskdata_helpers import load_test_tokenizer, train_step_and_evaluate
from _taskdata_twelve_b import build_one_task, visual7w_world
from vilbert.tasks.config import TaskConfigError


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _task(tmp_path):
    return build_one_task(tmp_path, "TASK4", name="Visual7w", type="V-logit-mc", dataroot="visual7w",
                          features_h5path1="visual7w/v7w_det.lmdb", features_h5path2="visual7w/v7w_gt.lmdb",
                          max_region_num=10, batch_size=2)


def test_candidates_are_the_answer_and_choices_among_the_images_boxes(tmp_path, tokenizer):
    visual7w_world(tmp_path)
    task = _task(tmp_path)
    assert task.head == "vision_logit" and task.type.name == "V-logit-mc"
    train = task.dataset("train", tokenizer)
    assert train.qa_ids == [101, 102, 103] and train.max_candidates == 4
    # qa 101 on image 1: candidates 11, 12, 13, 15 (sorted ids) of the image's boxes 11..17; the
    # answer is 13, and 12 overlaps it with IoU 0.8.
    item = train[0]
    assert item["candidate_regions"].tolist() == [1, 2, 3, 5] and item["candidate_mask"].tolist() == [1] * 4
    np.testing.assert_allclose(item["target"], [0.0, 0.8, 1.0, 0.0], rtol=1e-6)
    assert item["image_attention_mask"].sum() == 10  # 7 gt boxes + 2 of the 4 detections + global
    assert train[1]["candidate_regions"].tolist() == [1, 4, 6, 7]  # qa 102: 11, 14 (answer), 16, 17
    assert task.dataset("test", tokenizer).qa_ids == [106]


def test_results_in_the_toolkit_format(tmp_path, tokenizer):
    visual7w_world(tmp_path)
    task = _task(tmp_path)
    val = task.dataset("val", tokenizer)
    evaluator = task.evaluator(val)
    logits = torch.zeros(2, 10, 1)
    logits[0, 3, 0] = 5.0  # qa 104: region 3 = box 13, the answer
    logits[1, 2, 0] = 5.0  # qa 105: region 2 = box 12, not a candidate; the first candidate (11) wins the tie
    batch = {key: torch.as_tensor(np.stack([val[i][key] for i in range(2)]))
             for key in ("candidate_regions", "candidate_mask", "target")}
    evaluator.update(logits, {**batch, "index": torch.arange(2)})
    assert evaluator.compute() == pytest.approx({"accuracy": 50.0})
    assert evaluator.results() == [
        {"qa_id": 104, "question": "Which thing 104?", "candidates": [{"answer": 13}]},
        {"qa_id": 105, "question": "Which thing 105?", "candidates": [{"answer": 11}]}]


def test_a_store_in_another_order_or_a_bad_record_is_a_one_line_error(tmp_path, tokenizer):
    dataroot = visual7w_world(tmp_path)
    task = _task(tmp_path)
    path = dataroot / "dataset_v7w_pointing.json"
    data = json.loads(path.read_text())
    data["images"][0]["qa_pairs"][0]["answer"] = 14  # image 1 no longer has box 13: its store rows shift
    path.write_text(json.dumps(data))
    with pytest.raises(TaskConfigError, match="image v7w_1: the ground-truth store's boxes are not the candidates'"):
        task.dataset("train", tokenizer)[0]
    del data["images"][1]["qa_pairs"][0]["multiple_choices"]
    path.write_text(json.dumps(data))
    with pytest.raises(TaskConfigError, match=r"dataset_v7w_pointing.json, image 2: missing field 'multiple_choices'"):
        task.dataset("train", tokenizer)


def test_visual7w_trains_one_step_and_evaluates(tmp_path, tokenizer):
    visual7w_world(tmp_path)
    done = train_step_and_evaluate(_task(tmp_path), tokenizer)
    assert torch.isfinite(done["out"].loss) and set(done["metrics"]) == {"accuracy"}
    assert [r["qa_id"] for r in done["results"]] == [104, 105]
