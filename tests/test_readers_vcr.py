import json

import numpy as np
import pytest

from _taskdata_helpers import load_test_tokenizer, vcr_entry, vcr_world, write_tasks
from vilbert.data.collate import collate
from vilbert.data.vcr import NEUTRAL_NAMES, VCRDataset, object_names, vcr_image_id
from vilbert.features import FeatureReader
from vilbert.tasks.config import TaskConfigError, load_task_configs


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


@pytest.fixture
def configs(tmp_path):
    vcr_world(tmp_path)
    write_tasks(tmp_path / "tasks.yml", {"TASK6": vcr_entry("VCR_Q-A"), "TASK7": vcr_entry("VCR_QA-R")})
    return load_task_configs(tmp_path / "tasks.yml")


def _segments(tokenizer, item, option):
    ids, types, mask = (item[k][option] for k in ("input_ids", "token_type_ids", "attention_mask"))
    real = mask == 1
    first = tokenizer.decode(ids[real & (types == 0)][1:-1])  # without [CLS] ... [SEP]
    second = tokenizer.decode(ids[real & (types == 1)][:-1])
    return first, second


def test_vcr_ids_and_names():
    assert vcr_image_id("train-12") == 12 and vcr_image_id("val-3") == 1_000_003 and vcr_image_id("test-0") == 2_000_000
    with pytest.raises(ValueError, match="img_id 'dev-1'"):
        vcr_image_id("dev-1")
    names = object_names("val-7", ["person", "dog", "person"])
    assert names[1] == "dog" and names[0] in NEUTRAL_NAMES and names[2] in NEUTRAL_NAMES and names[0] != names[2]
    assert object_names("val-7", ["person", "dog", "person"]) == names  # fixed per annotation


def test_vcr_q2a_inputs_targets_and_regions(configs, tokenizer):
    data = VCRDataset(configs[6], "val", tokenizer, mode="q2a")
    assert len(data) == 2 and data.labels.tolist() == [0, 1] and data.metric_name == "q2a"
    item = data[0]
    assert item["input_ids"].shape == (4, 24) and item["target"] == 0
    names = object_names("val-0", ["person", "person", "dog"])
    a, b = names[0].lower(), names[1].lower()
    question, answer = _segments(tokenizer, item, 0)
    assert question == f"why is {a} looking at dog?"
    assert answer == f"{a} likes the dog."
    assert _segments(tokenizer, item, 3)[1] == f"{a} and {b} are hungry."

    # Ground-truth boxes first (rows 1-3), then detections; the image is shared by the 4 options.
    det = FeatureReader(configs[6].features_h5path1)[1_000_000]
    gt = FeatureReader(configs[6].features_h5path2)[1_000_000]
    np.testing.assert_allclose(item["image_loc"][1:4], gt.locations[1:])
    np.testing.assert_allclose(item["image_loc"][4:8], det.locations[1:5])
    assert item["image_attention_mask"].tolist() == [1] * 8

    batch = collate([data[0], data[1]])
    assert batch["input_ids"].shape == (8, 24) and batch["image_feat"].shape == (8, 8, 8)
    assert (batch["image_feat"][0] == batch["image_feat"][3]).all()
    assert (batch["image_feat"][4] == batch["image_feat"][7]).all()
    assert batch["target"].tolist() == [0, 1] and batch["annot_id"].tolist() == [0, 1]


def test_vcr_qa2r_uses_the_right_answer(configs, tokenizer):
    data = VCRDataset(configs[7], "val", tokenizer, mode="qa2r")
    item = data[1]  # answer_label 1 ("it is raining."), rationale_label 3
    assert item["target"] == 3
    context, rationale = _segments(tokenizer, item, 0)
    assert context.endswith("dog? it is raining.")
    assert rationale == "dog is cute."

    # Test split: no labels, one item per answer choice, each marked with its answer index.
    test = VCRDataset(configs[7], "test", tokenizer, mode="qa2r")
    assert len(test) == 4 and not test.has_labels and test.answer_indices.tolist() == [0, 1, 2, 3]
    assert _segments(tokenizer, test[1], 0)[0].endswith("it is raining.")


def test_vcr_bad_records_are_named(tmp_path, configs, tokenizer):
    val = tmp_path / "vcr" / "val.jsonl"
    records = [json.loads(line) for line in val.read_text().splitlines()]
    del records[1]["question"]
    val.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(TaskConfigError, match=r"val.jsonl:2: missing field 'question'"):
        VCRDataset(configs[6], "val", tokenizer, mode="q2a")
    records[1]["question"] = ["Who", "is", [7], "?"]
    val.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(TaskConfigError, match=r"val.jsonl:2: bad object reference \[7\]"):
        VCRDataset(configs[6], "val", tokenizer, mode="q2a")
