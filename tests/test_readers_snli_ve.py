"""SNLI-VE (VL-tri-classifier): the official jsonl, the 3-way head, accuracy and result records."""

import json

import numpy as np
import pytest
import torch

from _taskdata_helpers import (load_test_tokenizer, snli_ve_world, task_entry, train_step_and_evaluate,
                               write_tasks)
from vilbert.tasks.config import TaskConfigError, load_task_configs
from vilbert.tasks.registry import build_task


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def snli_ve_entry(**fields) -> dict:
    return task_entry(name="VisualEntailment", type="VL-tri-classifier", dataroot="snli_ve",
                      features_h5path1="snli_ve/flickr.lmdb", val_split="dev", **fields)


def _task(tmp_path, **fields):
    write_tasks(tmp_path / "tasks.yml", {"TASK13": snli_ve_entry(**fields)})
    return build_task(load_task_configs(tmp_path / "tasks.yml")[13])


def test_snli_ve_items_labels_and_images(tmp_path, tokenizer):
    snli_ve_world(tmp_path)
    task = _task(tmp_path)
    assert task.reader.name == "snli_ve" and task.head == "vil_tri_prediction"
    train = task.dataset("train", tokenizer)
    assert len(train) == 6 and train.image_ids[:3] == [11, 12, 13]  # "11.jpg" -> Flickr30k id 11
    # 12-in-1's label indices: contradiction 0, neutral 1, entailment 2.
    assert train.labels.tolist() == [2, 1, 0, 2, 1, 0]
    item = train[0]
    np.testing.assert_array_equal(item["target"], [0, 0, 1])
    assert tokenizer.decode(item["input_ids"][item["attention_mask"] == 1], skip_special_tokens=True) == \
        "hypothesis 0 of train"
    assert item["image_feat"].shape == (6, 8) and item["image_attention_mask"].sum() == 5  # 4 boxes + global

    # A record without a gold label ("-") stays, with an all-zero target; an unknown label is an error.
    path = tmp_path / "snli_ve" / "snli_ve_dev.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    path.write_text("\n".join([json.dumps({**first, "gold_label": "-"})] + lines[1:]) + "\n")
    dev = task.dataset("dev", tokenizer)
    assert dev.labels.tolist() == [-1, 1, 0] and dev[0]["target"].sum() == 0
    path.write_text(json.dumps({**first, "gold_label": "maybe"}) + "\n")
    with pytest.raises(TaskConfigError, match="'maybe'"):
        task.dataset("dev", tokenizer)


def test_snli_ve_accuracy_by_hand(tmp_path, tokenizer):
    snli_ve_world(tmp_path)
    task = _task(tmp_path)
    dev = task.dataset("dev", tokenizer)  # labels 2, 1, 0
    evaluator = task.evaluator(dev)
    logits = torch.tensor([[0.0, 0.1, 0.9], [0.8, 0.1, 0.1], [0.5, 0.2, 0.3]])  # top: 2 (right), 0 (wrong), 0 (right)
    evaluator.update(logits, {"index": torch.arange(3), "target": torch.eye(3)[[2, 1, 0]]})
    assert evaluator.compute() == pytest.approx({"accuracy": 200 / 3})
    assert evaluator.results() == [{"pairID": "dev-0", "prediction": "entailment"},
                                   {"pairID": "dev-1", "prediction": "contradiction"},
                                   {"pairID": "dev-2", "prediction": "contradiction"}]
    # The loss: BCE over the one-hot label, a plain mean over (B, 3) (12-in-1's, no factor L).
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.eye(3)[[2, 1, 0]])
    assert torch.allclose(task.type.loss(logits, {"target": torch.eye(3)[[2, 1, 0]]}), expected)


def test_snli_ve_trains_one_step_and_evaluates(tmp_path, tokenizer):
    snli_ve_world(tmp_path)
    done = train_step_and_evaluate(_task(tmp_path), tokenizer)
    assert torch.isfinite(done["out"].loss) and set(done["metrics"]) == {"accuracy"}
    assert len(done["results"]) == 3 and {r["prediction"] for r in done["results"]} <= {
        "entailment", "neutral", "contradiction"}
