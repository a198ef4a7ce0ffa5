"""12-in-1's own task-file entries for NLVR2 (12), VisualEntailment (13) and GQA (15) run through
train_tasks.py and eval_tasks.py (in process), on generated data in each official format: the
entries are read from vilbert_tasks.yml as they are, with only the data paths and the sizes shrunk."""

from pathlib import Path

import pytest

from _taskdata_helpers import gqa_world, nlvr2_world, snli_ve_world
from _taskdata_twelve_a import train_then_evaluate_each, write_twelve_in_one_tasks
from vilbert.data import gqa as gqa_module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tasks_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gqa_module, "MINVAL_SIZE", 2)
    return write_twelve_in_one_tasks(tmp_path, {"TASK12": (nlvr2_world(tmp_path), "nlvr2.lmdb", ""),
                                                "TASK13": (snli_ve_world(tmp_path), "flickr.lmdb", ""),
                                                "TASK15": (gqa_world(tmp_path), "gqa.lmdb", "")})


def test_nlvr2_entailment_and_gqa_train_and_evaluate_from_twelve_in_ones_entries(tasks_file, minilm_dir,
                                                                                  monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    train_then_evaluate_each(tasks_file, minilm_dir, {"12": "NLVR2", "13": "VisualEntailment", "15": "GQA"},
                             records={"12": 2, "13": 3, "15": 2})
