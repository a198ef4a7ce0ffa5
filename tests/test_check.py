"""The preflight check (vilbert.check): each kind of bad data is found, counted and named."""

import json

import numpy as np
import pytest

from _reliability_helpers import checked_vqa_world, put_foreign_record, tiny_model_config
from _taskdata_helpers import FEATURE_DIM, grid_boxes, load_test_tokenizer, write_store
from vilbert.check import CheckReport, check_pretraining, check_store, check_tasks, main, preflight
from vilbert.tasks.config import TaskConfigError
from vilbert.training.cli import SetupError


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _check(tasks_file, tokenizer, **kwargs):
    kwargs.setdefault("model_config", tiny_model_config())
    return check_tasks("1", tasks_file, tokenizer=tokenizer, **kwargs)


def test_sound_task_data_passes_with_counts(tmp_path, tokenizer):
    report = _check(checked_vqa_world(tmp_path), tokenizer)
    assert report.ok, report.format()
    text = report.format()
    assert "train: 12 items, 4 images" in text and "val: 6 items, 4 images" in text
    assert "4 records, all checked" in text and text.endswith("OK: no problem found")


def test_image_ids_without_features_are_counted_and_named(tmp_path, tokenizer):
    tasks = checked_vqa_world(tmp_path)
    store = tmp_path / "features.lmdb"
    import shutil

    shutil.rmtree(store)
    write_store(store, {i: (60, 80, grid_boxes(3)) for i in (1, 2)})  # images 3 and 4 lost
    report = _check(tasks, tokenizer)
    what = "task 1 (VQA) train: image ids without features in features_h5path1"
    assert report.problems[what].count == 2 and report.problems[what].examples == ["3", "4"]
    assert any("items that fail to load" in p for p in report.problems)  # the sampled items say it too


def test_feature_width_from_another_config_is_a_problem_naming_the_field(tmp_path, tokenizer):
    report = _check(checked_vqa_world(tmp_path), tokenizer, model_config=tiny_model_config(v_feature_size=48))
    (what,) = report.problems
    assert f"{FEATURE_DIM}-wide features, but the config's v_feature_size is 48" in what
    assert report.problems[what].count == 4


def test_boxes_outside_the_image_and_nonfinite_records_are_found(tmp_path, tokenizer):
    tasks = checked_vqa_world(tmp_path)
    store = tmp_path / "features.lmdb"
    features = np.ones((2, FEATURE_DIM), np.float32)
    put_foreign_record(store, 2, [[0, 0, 10, 10], [50, 40, 90, 55]], features)  # x2 = 90 > width 80
    bad = features.copy()
    bad[1, 3] = np.nan
    put_foreign_record(store, 3, [[0, 0, 10, 10], [1, 1, 5, 5]], bad)
    report = _check(tasks, tokenizer)
    problems = {what.split(" (")[0]: entry for what, entry in report.problems.items()}
    assert problems["records with boxes outside their image"].examples == ["key '2'"]
    assert problems["records whose features contain NaN or inf"].examples == ["key '3'"]
    # ... and the items of image 3 fail to load, naming the store and the key.
    failing = next(e for w, e in report.problems.items() if "items that fail to load" in w)
    assert any("record '3'" in example and "NaN or inf" in example for example in failing.examples)


def test_answer_vocabulary_that_misses_the_training_answers(tmp_path, tokenizer):
    report = _check(checked_vqa_world(tmp_path, vocabulary=("yes", "no")), tokenizer)
    (what,) = report.problems
    assert "no answer in the answer vocabulary" in what
    assert report.problems[what].count == 12
    assert report.problems[what].examples[:2] == ["question_id 100", "question_id 101"]


def test_unreadable_annotations_are_a_problem_not_a_crash(tmp_path, tokenizer):
    tasks = checked_vqa_world(tmp_path)
    (tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json").write_text("{not json")
    report = _check(tasks, tokenizer)
    (what,) = report.problems
    assert what == "task 1 (VQA) val: annotations or stores that cannot be read"
    assert "v2_mscoco_val2014_annotations.json" in report.problems[what].examples[0]


def test_full_mode_reads_every_record_and_sampling_reads_fewer(tmp_path):
    store = write_store(tmp_path / "s.lmdb", {i: (60, 80, grid_boxes(2)) for i in range(30)})
    put_foreign_record(store, "zz", [[0, 0, np.inf, 4]], np.ones((1, FEATURE_DIM)))  # the last key
    sampled = CheckReport()
    check_store(store, sampled, feature_size=FEATURE_DIM, sample=10)
    assert sampled.ok and "a sample of 10 checked" in sampled.lines[0]
    full = CheckReport()
    check_store(store, full, feature_size=FEATURE_DIM, full=True)
    assert "31 records, all checked" in full.lines[0]
    assert [w.split(" (")[0] for w in full.problems] == ["records whose boxes contain NaN or inf"]


def test_pretraining_check_finds_missing_class_distributions(tmp_path):
    from vilbert.data.concap import ConcapPaths, image_id_from_url

    urls = [f"http://x/{i}.jpg" for i in range(4)]
    for name in ("train.tsv", "val.tsv"):
        (tmp_path / name).write_text("".join(f"caption {i}\t{u}\n" for i, u in enumerate(urls)))
    write_store(tmp_path / "features", {image_id_from_url(u): (60, 80, grid_boxes(2)) for u in urls})
    paths = ConcapPaths.from_dir(None, tmp_path / "train.tsv", tmp_path / "val.tsv", [tmp_path / "features"])
    assert check_pretraining(paths, model_config=tiny_model_config(), visual_target=1).ok
    report = check_pretraining(paths, model_config=tiny_model_config(), visual_target=0)
    assert [w.split(" (")[0] for w in report.problems] == [
        "records without cls_prob, the class distributions --visual_target 0 needs"]
    (tmp_path / "val.tsv").write_text("a caption without a url\n")
    report = check_pretraining(paths, model_config=tiny_model_config(), visual_target=1)
    assert "val.tsv:1: expected 'caption<TAB>url'" in report.problems["caption files that cannot be read"].examples[0]


def test_preflight_of_pretraining_reads_the_scripts_flags(tmp_path):
    import argparse

    from vilbert.data.concap import image_id_from_url

    urls = [f"http://x/{i}.jpg" for i in range(3)]
    (tmp_path / "captions.tsv").write_text("".join(f"caption {i}\t{u}\n" for i, u in enumerate(urls)))
    write_store(tmp_path / "features", {image_id_from_url(u): (60, 80, grid_boxes(2)) for u in urls})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_model_config().to_dict()))
    args = argparse.Namespace(file_path=None, train_captions=str(tmp_path / "captions.tsv"),
                              val_captions=str(tmp_path / "captions.tsv"), features=[str(tmp_path / "features")],
                              visual_target=1, config_file=str(config), from_pretrained="", skip_check=False,
                              save_name="concap", output_dir=str(tmp_path / "out"), max_region_num=37)
    preflight(args)
    with pytest.raises(SetupError, match="records without cls_prob, the class distributions --visual_target 0"):
        preflight(argparse.Namespace(**{**vars(args), "visual_target": 0}))
    with pytest.raises(SetupError, match=r"^--max_region_num must be at least 2, got 1$"):
        preflight(argparse.Namespace(**{**vars(args), "max_region_num": 1, "skip_check": True}))


def test_command_line_exit_status_and_report(tmp_path, minilm_dir, capsys):
    tasks = checked_vqa_world(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_model_config().to_dict()))
    base = ["--tasks", "1", "--tasks_config", str(tasks), "--bert_model", str(minilm_dir)]
    assert main(base + ["--config_file", str(config)]) == 0
    assert "OK: no problem found" in capsys.readouterr().out
    config.write_text(json.dumps(tiny_model_config(v_feature_size=2048).to_dict()))
    assert main(base + ["--config_file", str(config), "--full"]) == 1
    assert "PROBLEM records with 8-wide features, but the config's v_feature_size is 2048" in capsys.readouterr().out
    assert main(["--tasks", "5", "--tasks_config", str(tasks)]) == 2
    assert "unknown task id 5" in capsys.readouterr().err


def test_preflight_turns_the_first_problem_into_one_setup_error(tmp_path, minilm_dir):
    import argparse

    tasks = checked_vqa_world(tmp_path, vocabulary=("yes", "no"))
    args = argparse.Namespace(tasks="1", tasks_config=str(tasks), bert_model=str(minilm_dir), config_file="",
                              from_pretrained="", skip_check=False)
    with pytest.raises(SetupError) as error:
        preflight(args)
    message = str(error.value)
    assert "\n" not in message and message.startswith("preflight check: task 1 (VQA) train: more than 50%")
    assert "question_id 100" in message and "--skip_check" in message
    preflight(argparse.Namespace(**{**vars(args), "skip_check": True}))  # skipped: no error
    with pytest.raises(SetupError, match="unknown task id 3"):
        preflight(argparse.Namespace(**{**vars(args), "tasks": "3"}))


def test_a_bad_task_file_is_a_task_config_error(tmp_path, tokenizer):
    (tmp_path / "tasks.yml").write_text("TASK1: [not, a, mapping]\n")
    with pytest.raises(TaskConfigError, match="TASK1 must be a mapping"):
        check_tasks("1", tmp_path / "tasks.yml", tokenizer=tokenizer)
