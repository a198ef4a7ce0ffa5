"""12-in-1's own task-file entries for GenomeQA (2), refcocog (11), Foil (16) and FlickrGrounding (18)
run through train_tasks.py and eval_tasks.py (in process), on generated data in each official
format: the entries are read from vilbert_tasks.yml as they are, with only the data paths and the
sizes shrunk."""

from pathlib import Path

import pytest

from _taskdata_twelve_a import (flickr_entities_world, foil_world, genome_world, refcocog_world,
                                train_then_evaluate_each, write_twelve_in_one_tasks)
from vilbert.data import genome_qa

REPO = Path(__file__).resolve().parents[1]
NAMES = {"2": "GenomeQA", "11": "refcocog", "16": "Foil", "18": "FlickrGrounding"}


def test_twelve_in_ones_entries_select_and_build():
    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks("2-11-16-18", REPO / "vilbert_tasks.yml")
    assert {i: (t.name, t.head, t.reader.name, t.config.loss) for i, t in tasks.items()} == {
        2: ("GenomeQA", "vil_prediction", "genome_qa", "BCEWithLogitLoss"),
        11: ("refcocog", "vision_logit", "refer_umd", "BCEWithLogitLoss"),
        16: ("Foil", "vil_binary_prediction", "foil", "CrossEntropyLoss"),
        18: ("FlickrGrounding", "vision_logit", "flickr_grounding", "BCEWithLogitLoss")}


@pytest.fixture()
def tasks_file(tmp_path, monkeypatch):
    monkeypatch.setattr(genome_qa, "VAL_SIZE", 3)
    return write_twelve_in_one_tasks(tmp_path, {
        "TASK2": (genome_world(tmp_path), "vg.lmdb", ""), "TASK11": (refcocog_world(tmp_path), "det.lmdb", "gt.lmdb"),
        "TASK16": (foil_world(tmp_path), "coco.lmdb", ""),
        "TASK18": (flickr_entities_world(tmp_path), "flickr_det.lmdb", "flickr_gt.lmdb"),
    })


def test_genome_refcocog_foil_and_grounding_train_and_evaluate_from_twelve_in_ones_entries(tasks_file, minilm_dir,
                                                                                           monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    train_then_evaluate_each(tasks_file, minilm_dir, NAMES, records={"2": 3, "11": 2, "16": 4, "18": 3}, max_steps=8)
