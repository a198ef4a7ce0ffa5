"""NLVR2 (VL-binary-classifier): the official JSON lines, image pairs on consecutive rows, the
binary head over the pooled pair, accuracy and result records."""

import pytest
import torch

from _taskdata_helpers import load_test_tokenizer, nlvr2_world, task_entry, train_step_and_evaluate, write_tasks
from vilbert.data.collate import collate
from vilbert.data.nlvr2 import pair_image_ids
from vilbert.tasks.config import load_task_configs
from vilbert.tasks.registry import build_task


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _task(tmp_path, **fields):
    write_tasks(tmp_path / "tasks.yml", {"TASK12": task_entry(
        name="NLVR2", type="VL-binary-classifier", dataroot="nlvr2", features_h5path1="nlvr2/nlvr2.lmdb",
        val_split="dev", **fields)})
    return build_task(load_task_configs(tmp_path / "tasks.yml")[12])


def test_image_names_as_the_original_derives_them():
    assert pair_image_ids("dev-850-0-1") == ("dev-850-0-img0", "dev-850-0-img1")
    assert pair_image_ids("train-10171-0-0") == ("train-10171-0-img0", "train-10171-0-img1")


def test_nlvr2_items_hold_the_pair_on_consecutive_rows(tmp_path, tokenizer):
    nlvr2_world(tmp_path)
    task = _task(tmp_path)
    train = task.dataset("train", tokenizer)
    assert train.labels.tolist() == [1, 0, 1, 0]  # True 1, False 0
    item = train[1]
    assert item["input_ids"].shape == (2, 12) and (item["input_ids"][0] == item["input_ids"][1]).all()
    assert item["image_feat"].shape == (2, 6, 8)
    assert item["image_attention_mask"].sum(1).tolist() == [4, 5]  # img0 has 3 boxes, img1 4 (+ global)
    assert item["target"].tolist() == [1.0, 0.0]

    batch = collate([train[0], train[1]])
    assert batch["input_ids"].shape == (4, 12) and batch["image_feat"].shape == (4, 6, 8)
    assert batch["image_attention_mask"].sum(1).tolist() == [4, 5, 4, 5]  # img0, img1 of each example
    assert batch["target"].shape == (2, 2)
    assert task.dataset("test1", tokenizer).identifiers == ["test1-10-0-0", "test1-11-1-1"]


def test_the_binary_head_reads_each_pair_side_by_side():
    from _model_helpers import random_inputs, tiny_config
    from vilbert.model import ViLBertForVLTasks, fuse

    model = ViLBertForVLTasks(tiny_config(), num_labels=3, multitask_heads=True).eval()
    inputs = random_inputs(model.config, batch=4)
    with torch.no_grad():
        out = model(**inputs, heads={"vil_binary_prediction"})
        body = model.vilbert(inputs["input_ids"], inputs["image_feat"], inputs["image_loc"], None,
                             inputs["attention_mask"], inputs["image_attention_mask"])
        pooled = fuse(body.pooled_output_t, body.pooled_output_v, model.config.fusion_method)  # (4, bi)
        pairs = torch.cat([pooled[0::2], pooled[1::2]], dim=1)  # (2, 2 bi): [img0 | img1] per example
        torch.testing.assert_close(out.vil_binary_prediction, model.vil_binary_prediction(pairs))


def test_nlvr2_accuracy_by_hand(tmp_path, tokenizer):
    nlvr2_world(tmp_path)
    task = _task(tmp_path)
    dev = task.dataset("dev", tokenizer)  # labels True, False
    evaluator = task.evaluator(dev)
    evaluator.update(torch.tensor([[0.2, 0.7], [0.1, 0.3]]), {"index": torch.arange(2),
                                                             "target": torch.tensor([[0.0, 1.0], [1.0, 0.0]])})
    assert evaluator.compute() == pytest.approx({"accuracy": 50.0})
    assert evaluator.results() == [{"identifier": "dev-10-0-0", "prediction": "True"},
                                   {"identifier": "dev-11-1-1", "prediction": "True"}]


def test_nlvr2_trains_one_step_and_evaluates(tmp_path, tokenizer):
    nlvr2_world(tmp_path)
    done = train_step_and_evaluate(_task(tmp_path), tokenizer)
    assert torch.isfinite(done["out"].loss) and set(done["metrics"]) == {"accuracy"}
    assert [r["identifier"] for r in done["results"]] == ["dev-10-0-0", "dev-11-1-1"]
