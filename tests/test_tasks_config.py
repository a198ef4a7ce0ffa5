from pathlib import Path

import pytest
import yaml

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


def test_repository_task_files_parse_fully():
    """Both shipped files, every entry, by the same code: the seed's ids and 12-in-1's."""
    seed = load_task_configs(REPO / "vlbert_tasks.yml")
    multi = load_task_configs(REPO / "vilbert_tasks.yml")
    assert {i: c.name for i, c in multi.items()} == {
        1: "VQA", 2: "GenomeQA", 3: "VisualDialog", 4: "Visual7w", 5: "VCR_Q-A", 6: "VCR_QA-R", 7: "RetrievalCOCO",
        8: "RetrievalFlickr30k", 9: "refcoco", 10: "refcoco+", 11: "refcocog", 12: "NLVR2", 13: "VisualEntailment",
        14: "GuessWhat", 15: "GQA", 16: "Foil", 17: "GuessWhatPointing", 18: "FlickrGrounding"}
    assert [c.type for c in multi.values()] == [
        "VL-classifier", "VL-classifier", "VL-logit", "V-logit-mc", "VL-logit", "VL-logit", "VL-logit", "VL-logit",
        "V-logit", "V-logit", "V-logit", "VL-binary-classifier", "VL-tri-classifier", "VL-tri-classifier",
        "VL-classifier-GQA", "VL-binary-classifier", "V-logit-mc", "V-logit"]
    assert multi[16].loss == "CrossEntropyLoss" and multi[12].loss == "BCEWithLogitLoss"  # as 12-in-1's file
    assert [c.process for c in multi.values()][:8] == ["normal", "normal", "dialog", "normal", "expand", "expand",
                                                       "retrieval", "retrieval"]
    assert all(c.process is None for c in seed.values())
    # Our data/ layout, 12-in-1's feature stores; the original's values otherwise.
    assert multi[1].dataroot == REPO / "data" / "VQA" and multi[1].max_region_num == 101
    assert multi[10].features_h5path1 == REPO / "data/referExpression/refcoco+_resnext152_faster_rcnn_genome.lmdb"
    assert multi[8].val_annotations_jsonpath == REPO / "data/flickr30k/all_data_final_test_set0_2014.jsonline"
    assert multi[18].lr == pytest.approx(2e-6) and multi[17].max_seq_length == 256 and multi[13].val_split == "dev"
    # The five tasks both files hold: the same task under another id.
    for seed_id, multi_id in {1: 1, 6: 5, 7: 6, 9: 8, 11: 10}.items():
        assert (seed[seed_id].name, seed[seed_id].type, seed[seed_id].reader) == \
            (multi[multi_id].name, multi[multi_id].type, multi[multi_id].reader)


def test_twelve_in_one_ids_select_its_tasks():
    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks("1-5-6-7-8-9-10", REPO / "vilbert_tasks.yml")
    assert {i: (t.name, t.type.name, t.reader.name) for i, t in tasks.items()} == {
        1: ("VQA", "VL-classifier", "vqa"), 5: ("VCR_Q-A", "VL-logit", "vcr_q2a"),
        6: ("VCR_QA-R", "VL-logit", "vcr_qa2r"), 7: ("RetrievalCOCO", "VL-logit", "retrieval"),
        8: ("RetrievalFlickr30k", "VL-logit", "retrieval"), 9: ("refcoco", "V-logit", "refer"),
        10: ("refcoco+", "V-logit", "refer")}
    # The seed's file still selects by its own ids.
    seed = build_tasks("6-7-9-11", REPO / "vlbert_tasks.yml")
    assert [t.name for t in seed.values()] == ["VCR_Q-A", "VCR_QA-R", "RetrievalFlickr30k", "refcoco+"]


def test_every_twelve_in_one_task_builds():
    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks("-".join(str(i) for i in range(1, 19)), REPO / "vilbert_tasks.yml")
    assert sorted(tasks) == list(range(1, 19))


def test_a_task_without_its_reader_is_a_one_line_error(tmp_path):
    from vilbert.tasks.registry import build_tasks

    entry = dict(yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())["TASK1"], reader="new_format")
    path = tmp_path / "tasks.yml"
    path.write_text(yaml.safe_dump({"TASK1": entry}))
    with pytest.raises(TaskConfigError, match="cannot run here yet") as info:
        build_tasks("1", path)
    message = str(info.value)
    assert "\n" not in message and "TASK1 " in message
    assert "unknown reader 'new_format'" in message


def test_twelve_in_one_nlvr2_entailment_and_gqa_select_and_build():
    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks("12-13-15", REPO / "vilbert_tasks.yml")
    assert {i: (t.name, t.type.name, t.head, t.reader.name, t.config.val_split) for i, t in tasks.items()} == {
        12: ("NLVR2", "VL-binary-classifier", "vil_binary_prediction", "nlvr2", "dev"),
        13: ("VisualEntailment", "VL-tri-classifier", "vil_tri_prediction", "snli_ve", "dev"),
        15: ("GQA", "VL-classifier-GQA", "vil_prediction_gqa", "gqa", "minval")}


def test_an_unsupported_task_stops_a_script_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import train_tasks

    write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(),
                                     "TASK17": task_entry(name="Counting", reader="unregistered")})
    code = train_tasks.main(["--tasks_config", str(tmp_path / "t.yml"), "--tasks", "1-17"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "TASK17 (Counting)" in err[0] and "reader 'unregistered'" in err[0]


def test_task_token_process_and_ignored_fields(tmp_path):
    write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(task_token=0, process="normal", start_iteration=0),
                                     "TASK2": task_entry(name="MyVQA", reader="vqa"),
                                     "TASK3": task_entry(name="VCR_QA-R", reader="vqa")})
    configs = load_task_configs(tmp_path / "t.yml")
    assert configs[1].task_token == 0 and configs[1].process == "normal"  # an explicit row, even 0
    assert configs[2].task_token is None and configs[2].process is None  # no 12-in-1 task of that name
    assert configs[3].task_token == 6  # by name, not by id
    assert not hasattr(configs[1], "start_iteration")


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
        ({"task_token": -1}, r"TASK1.task_token must not be negative, got -1"),
        ({"task_token": "first"}, r"TASK1.task_token must be an integer, got 'first'"),
        ({"process": "shuffle"}, r"TASK1.process: unknown value 'shuffle' \(known: normal, dialog"),
        ({"type": "VL-binary-classifier", "loss": "MSELoss"},
         r"TASK1.loss: VL-binary-classifier tasks use BCEWithLogitLoss or CrossEntropyLoss, got 'MSELoss'"),
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
