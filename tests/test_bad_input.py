"""Bad input is a one-line error naming what is wrong: non-finite numbers in feature data (writers,
converters, extractor boxes file, reader), malformed command-line values, a config of another model
size, a checkpoint of another config."""

import base64
import json
import pickle
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from _reliability_helpers import checked_vqa_world, put_foreign_record
from _taskdata_helpers import FEATURE_DIM, grid_boxes, write_store
from vilbert.features import FeatureReader, FeatureStoreError, FeatureWriter
from vilbert.features.convert import convert
from vilbert.features.extract import load_boxes_file

REPO = Path(__file__).resolve().parents[1]
BOXES = np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32)


def _arrays(field=None, value=np.nan):
    arrays = {"boxes": BOXES.copy(), "features": np.ones((2, 4), np.float32),
              "cls_prob": np.full((2, 3), 1 / 3, np.float32)}
    if field is not None:
        arrays[field][1, 1] = value
    return arrays


@pytest.mark.parametrize("field", ["boxes", "features", "cls_prob"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_the_writer_refuses_nonfinite_values_naming_the_image(tmp_path, field, value):
    with FeatureWriter(tmp_path / "s") as writer:
        with pytest.raises(FeatureStoreError, match=rf"^image 7: {field} contains? NaN or inf$"):
            writer.put(7, image_h=40, image_w=40, **_arrays(field, value))
        assert 7 not in writer


def _b64(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array, np.float32).tobytes()).decode()


def test_tsv_conversion_refuses_nan_features_naming_the_image(tmp_path):
    good, bad = _arrays(), _arrays("features")
    lines = [["11", "40", "40", "2", _b64(a["boxes"]), _b64(a["features"]), _b64(a["cls_prob"])] for a in (good, bad)]
    lines[1][0] = "12"
    (tmp_path / "f.tsv").write_text("".join("\t".join(line) + "\n" for line in lines))
    with pytest.raises(FeatureStoreError, match=r"^image 12: features contain NaN or inf$"):
        convert("tsv", tmp_path / "f.tsv", tmp_path / "s", progress=False)


def test_npy_conversion_refuses_inf_boxes_naming_the_image(tmp_path):
    a = _arrays("boxes", np.inf)
    np.save(tmp_path / "COCO_5.npy", {"image_id": "COCO_5", "image_height": 40, "image_width": 40, "num_boxes": 2,
                                      "bbox": a["boxes"], "features": a["features"]})
    with pytest.raises(FeatureStoreError, match=r"^image COCO_5: boxes contain NaN or inf$"):
        convert("npy", [tmp_path / "COCO_5.npy"], tmp_path / "s", progress=False)


def test_legacy_lmdb_conversion_refuses_nan_class_distributions_naming_the_image(tmp_path):
    a = _arrays("cls_prob")
    env = lmdb.open(str(tmp_path / "old.lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"31", pickle.dumps({"image_id": 31, "image_h": 40, "image_w": 40, "num_boxes": 2, "boxes": a["boxes"],
                                     "features": a["features"], "cls_prob": a["cls_prob"]}))
    env.close()
    with pytest.raises(FeatureStoreError, match=r"^image 31: cls_prob contains NaN or inf$"):
        convert("legacy-lmdb", tmp_path / "old.lmdb", tmp_path / "s", progress=False)


@pytest.mark.parametrize("field, text", [("boxes", "[[0, 0, NaN, 4]]"), ("cls_prob", "[[0.5, Infinity]]")])
def test_extractor_boxes_file_refuses_nonfinite_values_naming_the_image(tmp_path, field, text):
    entry = {"boxes": "[[0, 0, 3, 4]]", "cls_prob": "[[0.5, 0.5]]", field: text}
    text = '{"img9": {"boxes": %s, "cls_prob": %s}}' % (entry["boxes"], entry["cls_prob"])
    (tmp_path / "boxes.json").write_text(text)
    with pytest.raises(ValueError, match=rf"image img9: \"{field}\" contains? NaN or inf"):
        load_boxes_file(tmp_path / "boxes.json")


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_the_reader_flags_nonfinite_records_of_other_tools_naming_store_and_key(tmp_path):
    store = write_store(tmp_path / "s.lmdb", {1: (60, 80, grid_boxes(2))})
    features = np.ones((2, FEATURE_DIM), np.float32)
    put_foreign_record(store, "nan-feature", BOXES, np.where(np.eye(2, FEATURE_DIM) > 0, np.nan, features))
    put_foreign_record(store, "inf-box", np.where(BOXES > 15, np.inf, BOXES), features)
    put_foreign_record(store, "huge", BOXES, np.full((2, FEATURE_DIM), 3e38, np.float32))  # finite; mean overflows
    reader = FeatureReader(store)
    assert np.isfinite(reader[1].features).all()
    with pytest.raises(FeatureStoreError) as error:
        reader["nan-feature"]
    message = str(error.value)
    assert "\n" not in message and "'nan-feature'" in message and str(store.resolve()) in message
    assert "features contain NaN or inf" in message
    with pytest.raises(FeatureStoreError, match=r"record 'inf-box' in .*: boxes contain NaN or inf"):
        reader["inf-box"]
    assert reader["huge"].features[1, 0] == np.float32(3e38)  # not flagged: every stored value is finite


def _script_main(script: str, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return __import__(script).main


@pytest.mark.parametrize("flags, flag", [
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--learning_rate=-1e-5"], "--learning_rate"),
    (["--warmup_proportion", "1.5"], "--warmup_proportion"),
    (["--num_workers", "-2"], "--num_workers"),
    (["--train_batch_size", "0"], "--train_batch_size"),
    (["--num_train_epochs", "inf"], "--num_train_epochs"),
    (["--max_grad_norm", "0"], "--max_grad_norm"),
    (["--save_name", "../../elsewhere"], "--save_name"),
    (["--tasks", "1;rm"], "--tasks"),
])
def test_train_tasks_malformed_values_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, flags, flag,
                                                                   minilm_dir):
    tasks = checked_vqa_world(tmp_path)
    main = _script_main("train_tasks", monkeypatch)
    code = main(["--tasks", "1", "--tasks_config", str(tasks), "--bert_model", str(minilm_dir),
                 "--output_dir", str(tmp_path / "out"), "--device", "cpu", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "elsewhere").exists()


def test_argparse_type_errors_name_the_flag(monkeypatch, capsys):
    main = _script_main("train_tasks", monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["--learning_rate", "fast"])
    assert exit_.value.code == 2 and "argument --learning_rate: invalid float value: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("script, flags, flag", [
    ("eval_tasks", ["--from_pretrained", "x", "--split", "../../etc"], "--split"),
    ("eval_tasks", ["--from_pretrained", "x", "--batch_size", "0"], "--batch_size"),
    ("train_concap", ["--max_region_num", "1"], "--max_region_num"),
    ("train_concap", ["--img_weight", "nan"], "--img_weight"),
    ("train_concap", ["--save_name", "/tmp"], "--save_name"),
])
def test_other_scripts_malformed_values_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, script, flags,
                                                                     flag):
    main = _script_main(script, monkeypatch)
    code = main(["--output_dir", str(tmp_path / "out"), "--device", "cpu", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err


def _tiny(path: Path, **changes) -> Path:
    values = json.loads((REPO / "config" / "vilbert_tiny.json").read_text())
    values.update(changes)
    path.write_text(json.dumps(values))
    return path


def test_config_file_errors_name_the_field(tmp_path):
    from vilbert.finetune import SetupError, load_task_model
    from vilbert.model import ViLBertForVLTasks

    for changes, field in [({"hidden_size": "32"}, "hidden_size"), ({"hiden_size": 32}, "hiden_size"),
                           ({"t_biattention_id": [2, 9]}, "t_biattention_id")]:
        config = _tiny(tmp_path / "c.json", **changes)
        with pytest.raises(SetupError) as error:
            load_task_model(ViLBertForVLTasks, "", str(config), log=lambda m: None)
        assert f"'{field}'" in str(error.value) and "\n" not in str(error.value)


def test_weights_of_another_model_size_are_one_line_naming_a_key(tmp_path):
    """An original .bin of one size loaded with --config_file of another, and one of our checkpoint
    directories whose config.json was swapped for another size's."""
    from vilbert.config import ViLBertConfig
    from vilbert.finetune import SetupError, load_task_model
    from vilbert.model import ViLBertForVLTasks

    small = ViLBertConfig.from_json_file(_tiny(tmp_path / "small.json"))
    torch.manual_seed(0)
    model = ViLBertForVLTasks(small, num_labels=3)
    torch.save(model.state_dict(), tmp_path / "small.bin")
    wider = _tiny(tmp_path / "wider.json", v_hidden_size=80)
    with pytest.raises(SetupError) as error:
        load_task_model(ViLBertForVLTasks, str(tmp_path / "small.bin"), str(wider), num_labels=3, log=lambda m: None)
    message = str(error.value)
    assert "\n" not in message and "small.bin: shapes differ from the config for " in message

    model.save_pretrained(tmp_path / "ours")
    (tmp_path / "ours" / "config.json").write_text((tmp_path / "wider.json").read_text())
    with pytest.raises(SetupError) as error:
        load_task_model(ViLBertForVLTasks, str(tmp_path / "ours"), None, num_labels=3, log=lambda m: None)
    assert "\n" not in str(error.value) and "shapes differ from the config for " in str(error.value)


def test_a_vqa_checkpoint_with_another_answer_count_is_one_line(tmp_path, monkeypatch, capsys, minilm_dir):
    from vilbert.config import ViLBertConfig
    from vilbert.model import ViLBertForVLTasks

    tasks = checked_vqa_world(tmp_path)
    config = ViLBertConfig.from_json_file(_tiny(tmp_path / "c.json", vocab_size=30522, v_feature_size=FEATURE_DIM))
    ViLBertForVLTasks(config, num_labels=5).save_pretrained(tmp_path / "vqa5")
    main = _script_main("eval_tasks", monkeypatch)
    code = main(["--tasks", "1", "--tasks_config", str(tasks), "--bert_model", str(minilm_dir), "--device", "cpu",
                 "--from_pretrained", str(tmp_path / "vqa5"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "its classifier has 5 answers, but task 1 (VQA) has 3" in err[0], err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
