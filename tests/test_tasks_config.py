from pathlib import Path

import pytest

from _taskdata_helpers import task_entry, write_tasks
from vilbert.tasks.config import TaskConfigError, load_task_configs, parse_task_ids, select_tasks

REPO = Path(__file__).resolve().parents[1]


def test_repository_task_file():
    configs = load_task_configs(REPO / "vlbert_tasks.yml")
    assert {i: c.name for i, c in configs.items()} == {
        1: "VQA", 6: "VCR_Q-A", 7: "VCR_QA-R", 9: "RetrievalFlickr30k", 11: "refcoco+"}
    vqa = configs[1]
    assert vqa.type == "VL-classifier" and vqa.train_split == "trainval" and vqa.val_split == "minval"
    assert vqa.dataroot == REPO / "data" / "VQA"  # relative to the tasks file
    assert vqa.features_h5path2 is None and vqa.train_annotations_jsonpath is None
    assert vqa.lr == pytest.approx(4e-5) and vqa.eval_batch_size == 1024
    assert configs[6].eval_batch_size == configs[6].batch_size == 64  # not given: batch_size
    assert configs[7].max_seq_length == 80 and configs[11].type == "V-logit"
    assert [c.reader for c in configs.values()] == ["vqa", "vcr_q2a", "vcr_qa2r", "retrieval", "refer"]


def test_parse_task_ids():
    assert parse_task_ids("1,6-7,9") == [1, 6, 7, 9]
    assert parse_task_ids("6-7") == [6, 7]
    assert parse_task_ids("1-11") == [1, 11]  # a dash separates ids, as the originals' --tasks 1-2-3
    assert parse_task_ids("9, 9,1") == [9, 1]
    assert parse_task_ids(11) == [11] and parse_task_ids(["1", 6]) == [1, 6]
    for bad in ("", "1,,2", "a", "1-x"):
        with pytest.raises(TaskConfigError, match="--tasks: expected task ids"):
            parse_task_ids(bad)


def test_selection_and_unknown_ids(tmp_path):
    configs = load_task_configs(REPO / "vlbert_tasks.yml")
    assert list(select_tasks(configs, "6-7")) == [6, 7]
    with pytest.raises(TaskConfigError, match=r"unknown task id 3 \(tasks in .*vlbert_tasks.yml: 1, 6, 7, 9, 11\)"):
        select_tasks(configs, "1,3")


def test_beta_style_keys_take_the_task_id_field(tmp_path):
    write_tasks(tmp_path / "t.yml", {"TASK0": task_entry(task_id=1), "TASK3": task_entry(task_id=9, name="X", reader="vqa")})
    assert list(load_task_configs(tmp_path / "t.yml")) == [1, 9]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, r"TASK1: unknown field 'colour'"),
        ({"lr": None}, r"TASK1.lr must be a number, got None"),
        ({"batch_size": 2.5}, r"TASK1.batch_size must be an integer, got 2.5"),
        ({"batch_size": 0}, r"TASK1.batch_size must be positive"),
        ({"type": "VL-regressor"}, r"TASK1.type: unknown task type 'VL-regressor'"),
        ({"loss": "CrossEntropyLoss"}, r"TASK1.loss: VL-classifier tasks use BCEWithLogitLoss"),
        ({"name": "MyTask"}, r"no reader is known for task name 'MyTask'; add 'reader: <one of"),
        ({"dataroot": ""}, r"TASK1.dataroot must name a path"),
    ],
)
def test_bad_fields_are_one_line_errors(tmp_path, change, message):
    write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(**change)})
    with pytest.raises(TaskConfigError, match=message) as info:
        load_task_configs(tmp_path / "t.yml")
    assert "\n" not in str(info.value) and str(tmp_path / "t.yml") in str(info.value)


def test_missing_fields_duplicates_and_files(tmp_path):
    entry = task_entry()
    del entry["val_split"]
    write_tasks(tmp_path / "t.yml", {"TASK1": entry})
    with pytest.raises(TaskConfigError, match="TASK1: missing field 'val_split'"):
        load_task_configs(tmp_path / "t.yml")
    write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(), "TASK2": task_entry(task_id=1)})
    with pytest.raises(TaskConfigError, match="task id 1 is used by both TASK1 and TASK2"):
        load_task_configs(tmp_path / "t.yml")
    with pytest.raises(TaskConfigError, match="tasks file not found: .*nope.yml"):
        load_task_configs(tmp_path / "nope.yml")
    (tmp_path / "bad.yml").write_text("TASK1: [unclosed\n")
    with pytest.raises(TaskConfigError, match="bad.yml: not valid YAML"):
        load_task_configs(tmp_path / "bad.yml")

    # Numbers PyYAML leaves as strings ("4e-5") are read; paths are checked only when used.
    write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(lr="4e-5", features_h5path1="/abs/feat.lmdb")})
    config = load_task_configs(tmp_path / "t.yml")[1]
    assert config.lr == 4e-5 and config.features_h5path1 == Path("/abs/feat.lmdb")
    with pytest.raises(TaskConfigError, match=r"TASK1 \(VQA\) in .*: features_h5path1 not found: /abs/feat.lmdb"):
        config.require(config.features_h5path1, "features_h5path1")
