"""Foil (12-in-1's FOIL-COCO, VL-binary-classifier): the official files, the caption with its image
twice for the binary head, the loss chosen by the task's `loss` field, accuracy and result records."""

import json

import pytest
import torch
import torch.nn.functional as F

from _taskdata_helpers import train_step_and_evaluate
from _taskdata_twelve_a import build_one_task, foil_world
from vilbert.data.collate import collate
from vilbert.tasks.config import TaskConfigError, replace
from vilbert.tasks.losses import vl_label_loss
from vilbert.tasks.registry import build_task


def _task(tmp_path, loss="CrossEntropyLoss"):
    foil_world(tmp_path)
    return build_one_task(tmp_path, 16, name="Foil", type="VL-binary-classifier", loss=loss, dataroot="Foil",
                          features_h5path1="Foil/coco.lmdb", train_annotations_jsonpath="Foil/foilv1.0_train_2017.json",
                          val_annotations_jsonpath="Foil/foilv1.0_test_2017.json")


def test_foil_items_give_the_image_twice(tmp_path, tokenizer):
    task = _task(tmp_path)
    train = task.dataset("train", tokenizer)
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1]  # foil true = 1
    item = train[1]
    assert item["input_ids"].shape == (2, 12) and (item["image_feat"][0] == item["image_feat"][1]).all()
    assert tokenizer.decode(item["input_ids"][0][item["attention_mask"][0] == 1], skip_special_tokens=True) == \
        "a dog sits on bench 1."
    batch = collate([train[0], train[1]])
    assert batch["input_ids"].shape == (4, 12) and batch["target"].tolist() == [[1, 0], [0, 1]]
    assert len(task.dataset("val", tokenizer)) == 4  # the val split reads the test file the entry names


def test_the_loss_follows_the_tasks_loss_field(tmp_path):
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0], [1.0, 0], [0.0, 0]])  # the last example has no gold label
    cross_entropy = _task(tmp_path / "ce").loss({"vil_binary_prediction": logits}, {"target": target})
    # Hand-computed: -log softmax at the gold label, 0 for the unlabelled row, mean over 3 rows.
    by_hand = (-F.log_softmax(logits[0], 0)[0] - F.log_softmax(logits[1], 0)[0]) / 3
    assert torch.allclose(cross_entropy, by_hand)
    bce = _task(tmp_path / "bce", loss="BCEWithLogitLoss").loss({"vil_binary_prediction": logits}, {"target": target})
    assert torch.allclose(bce, vl_label_loss(logits, {"target": target})) and not torch.allclose(bce, cross_entropy)
    # A type without a loss of that name (the tasks file admits none, a replaced config can) is named.
    config = replace(_task(tmp_path / "tri").config, type="VL-tri-classifier")
    with pytest.raises(TaskConfigError, match=r"TASK16 \(Foil\).*no CrossEntropyLoss for task type VL-tri-classifier"):
        build_task(config)


def test_foil_trains_one_step_and_writes_its_results(tmp_path, tokenizer):
    task = _task(tmp_path)
    run = train_step_and_evaluate(task, tokenizer)
    assert set(run["metrics"]) == {"accuracy"} and 0 <= run["metrics"]["accuracy"] <= 100
    records = run["results"]
    assert [(r["id"], r["image_id"]) for r in records] == [(200, 31), (201, 32), (202, 33), (203, 31)]
    assert all(isinstance(r["foil"], bool) for r in records)


def test_foil_accuracy_hand_computed(tmp_path, tokenizer):
    task = _task(tmp_path)
    val = task.dataset("val", tokenizer)  # labels 0, 1, 0, 1
    evaluator = task.evaluator(val)
    logits = torch.tensor([[3.0, 0], [3.0, 0], [0.0, 3], [0.0, 3]])  # right, wrong, wrong, right
    evaluator.update(logits, {"index": torch.arange(4), "target": torch.eye(2)[[0, 1, 0, 1]]})
    assert evaluator.compute() == {"accuracy": 50.0}
    path = evaluator.write(tmp_path / "foil.json")
    assert [r["foil"] for r in json.loads(path.read_text())] == [False, False, True, True]


def test_foil_bad_label_is_named(tmp_path, tokenizer):
    task = _task(tmp_path)
    path = tmp_path / "Foil" / "foilv1.0_train_2017.json"
    data = json.loads(path.read_text())
    data["annotations"][2]["foil"] = "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(TaskConfigError, match=r"TASK16 \(Foil\).*foilv1.0_train_2017.json: 'foil' must be true or "
                                              r"false, got 'yes'"):
        task.dataset("train", tokenizer)
