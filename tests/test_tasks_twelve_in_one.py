"""12-in-1's own task-file entries for NLVR2 (12), VisualEntailment (13) and GQA (15) run through
train_tasks.py and eval_tasks.py (in process), on generated data in each official format: the
entries are read from vilbert_tasks.yml as they are, with only the data paths and the sizes shrunk."""

import json
from pathlib import Path

import pytest
import yaml

from _taskdata_helpers import FEATURE_DIM, gqa_world, nlvr2_world, snli_ve_world
from vilbert.data import gqa as gqa_module

REPO = Path(__file__).resolve().parents[1]
DATA = {  # task key: (world writer, store under the world's folder)
    "TASK12": (nlvr2_world, "nlvr2.lmdb"), "TASK13": (snli_ve_world, "flickr.lmdb"), "TASK15": (gqa_world, "gqa.lmdb"),
}


@pytest.fixture()
def tasks_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gqa_module, "MINVAL_SIZE", 2)
    released = yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())
    entries = {}
    for key, (write_world, store) in DATA.items():
        dataroot = write_world(tmp_path)
        entries[key] = dict(released[key], dataroot=str(dataroot), features_h5path1=str(dataroot / store),
                            max_seq_length=12, max_region_num=6, batch_size=2, eval_batch_size=2, num_epoch=1)
    path = tmp_path / "vilbert_tasks.yml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    config = json.loads((REPO / "config" / "vilbert_tiny.json").read_text())
    config.update(vocab_size=30522, v_feature_size=FEATURE_DIM)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    return path


def test_nlvr2_entailment_and_gqa_train_and_evaluate_from_twelve_in_ones_entries(tasks_file, minilm_dir,
                                                                                  monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import eval_tasks
    import train_tasks

    root = tasks_file.parent
    common = ["--tasks_config", str(tasks_file), "--bert_model", str(minilm_dir), "--num_workers", "0"]
    assert train_tasks.main([*common, "--tasks", "12-13-15", "--config_file", str(root / "tiny.json"),
                             "--output_dir", str(root / "runs"), "--save_name", "t", "--max_steps", "6",
                             "--task_specific_tokens"]) == 0
    run_dir = root / "runs" / "NLVR2-VisualEntailment-GQA_t"
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert set(val) == {"NLVR2", "VisualEntailment", "GQA"} and all(set(m) == {"accuracy"} for m in val.values())

    for task_id, name, records in (("12", "NLVR2", 2), ("13", "VisualEntailment", 3), ("15", "GQA", 2)):
        out = root / f"eval-{task_id}"
        assert eval_tasks.main([*common, "--tasks", task_id, "--from_pretrained", str(run_dir / "best" / name),
                                "--output_dir", str(out), "--task_specific_tokens"]) == 0
        metrics = json.loads((out / "val_metrics.json").read_text())[name]
        assert metrics == val[name]  # the best checkpoint of the task, evaluated again
        assert len(json.loads((out / f"val_{name}_result.json").read_text())) == records
