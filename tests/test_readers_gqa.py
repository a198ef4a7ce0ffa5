"""GQA (VL-classifier-GQA): the official balanced questions, 12-in-1's splits and answer
vocabulary, the 1533-way head, exact-match accuracy and the submission records."""

import json
import pickle

import pytest
import torch

from _taskdata_helpers import gqa_world, load_test_tokenizer, task_entry, train_step_and_evaluate, write_tasks
from vilbert.data import gqa as gqa_module
from vilbert.tasks.config import TaskConfigError, load_task_configs
from vilbert.tasks.registry import build_task


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _task(tmp_path, **fields):
    fields = {"train_split": "trainval", "val_split": "minval", **fields}
    write_tasks(tmp_path / "tasks.yml", {"TASK15": task_entry(
        name="GQA", type="VL-classifier-GQA", dataroot="gqa", features_h5path1="gqa/gqa.lmdb", **fields)})
    return build_task(load_task_configs(tmp_path / "tasks.yml")[15])


def test_gqa_splits_vocabulary_and_items(tmp_path, tokenizer, monkeypatch):
    gqa_world(tmp_path)
    monkeypatch.setattr(gqa_module, "MINVAL_SIZE", 2)
    task = _task(tmp_path)
    assert task.head == "vil_prediction_gqa"
    train = task.dataset("trainval", tokenizer)
    # train + val (questions 0..7) in question-id order, minus the last two (minval).
    assert train.question_ids == [f"{n:08d}" for n in range(6)]
    assert task.dataset("minval", tokenizer).question_ids == ["00000006", "00000007"]
    assert task.dataset("train", tokenizer).question_ids == [f"{n:08d}" for n in range(5)]
    test = task.dataset("test", tokenizer)
    assert test.question_ids == ["00000008", "00000009"] and "target" not in test[0]

    # Vocabulary: every train + val answer, most frequent first (yes x3, no x2, left x2, cat x1), saved as JSON.
    assert train.label2ans == ["yes", "left", "no", "cat"]
    assert json.loads((tmp_path / "gqa" / "cache" / "trainval_label2ans.json").read_text()) == train.label2ans
    item = train[2]  # question 2: "left"
    assert item["target"].shape == (1533,) and item["target"].nonzero()[0].tolist() == [1]
    assert train.image_ids[:3] == ["n1", "2", "3"] and item["image_feat"].shape == (6, 8)


def test_gqa_reads_twelve_in_ones_pickled_vocabulary(tmp_path, tokenizer):
    gqa_world(tmp_path)
    cache = tmp_path / "gqa" / "cache"
    cache.mkdir()
    (cache / "trainval_label2ans.pkl").write_bytes(pickle.dumps(["no", "yes"], protocol=2))
    task = _task(tmp_path, train_split="train", val_split="val")
    train = task.dataset("train", tokenizer)
    assert train.label2ans == ["no", "yes"] and train.labels.tolist() == [1, 0, -1, 1, -1]  # "left", "cat" unknown
    (cache / "trainval_label2ans.pkl").write_bytes(pickle.dumps([str(i) for i in range(1534)], protocol=2))
    with pytest.raises(TaskConfigError, match="1534 answers"):
        task.dataset("train", tokenizer)


def test_gqa_accuracy_by_hand(tmp_path, tokenizer):
    gqa_world(tmp_path)
    task = _task(tmp_path, train_split="train", val_split="val")
    val = task.dataset("val", tokenizer)  # questions 5, 6, 7: "yes", "no", "left"
    assert val.label2ans == ["yes", "left", "no", "cat"] and val.labels.tolist() == [0, 2, 1]
    logits = torch.zeros(3, 1533)
    logits[0, 0] = 1  # "yes": right
    logits[1, 1] = 1  # "left": wrong
    logits[2, 1] = 1  # "left": right
    target = torch.stack([torch.as_tensor(val[i]["target"]) for i in range(3)])
    evaluator = task.evaluator(val)
    evaluator.update(logits, {"index": torch.arange(3), "target": target})
    assert evaluator.compute() == pytest.approx({"accuracy": 200 / 3})
    assert evaluator.results() == [{"questionId": "00000005", "prediction": "yes"},
                                   {"questionId": "00000006", "prediction": "left"},
                                   {"questionId": "00000007", "prediction": "left"}]
    # 12-in-1's GQA loss is VQA's: BCE mean over (B, 1533) times 1533.
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) * 1533
    assert torch.allclose(task.type.loss(logits, {"target": target}), expected)


def test_gqa_trains_one_step_and_evaluates(tmp_path, tokenizer, monkeypatch):
    gqa_world(tmp_path)
    monkeypatch.setattr(gqa_module, "MINVAL_SIZE", 2)
    done = train_step_and_evaluate(_task(tmp_path), tokenizer)
    assert torch.isfinite(done["out"].loss) and set(done["metrics"]) == {"accuracy"}
    assert [r["questionId"] for r in done["results"]] == ["00000006", "00000007"]
