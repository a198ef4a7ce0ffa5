"""Resuming an interrupted extraction, and a 2-process torchrun extraction read as one store."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _features_helpers import make_shape_images, write_boxes_json
from vilbert.features import FeatureReader
from vilbert.features import backbones
from vilbert.features.extract import run_extraction

REPO = Path(__file__).resolve().parents[1]


def test_interrupted_extraction_resumes_without_duplicates(tmp_path, monkeypatch):
    scenes = make_shape_images(tmp_path / "images", 7, np.random.default_rng(0))
    write_boxes_json(tmp_path / "boxes.json", scenes)
    kwargs = dict(boxes_file=tmp_path / "boxes.json", batch_size=2, progress=False)
    reference = run_extraction(tmp_path / "images", tmp_path / "reference", **kwargs)
    assert reference.written == 7

    real_call = backbones.PixelBackbone.__call__
    calls = []

    def crash_on_third_batch(self, images, boxes):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the job were killed mid-run
        return real_call(self, images, boxes)

    monkeypatch.setattr(backbones.PixelBackbone, "__call__", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(tmp_path / "images", tmp_path / "s", **kwargs)
    assert len(FeatureReader(tmp_path / "s")) == 4  # the two batches before the crash were committed

    monkeypatch.setattr(backbones.PixelBackbone, "__call__", real_call)
    resumed = run_extraction(tmp_path / "images", tmp_path / "s", **kwargs)
    assert resumed.already_done == 4 and resumed.written == 3
    reader, expected = FeatureReader(tmp_path / "s"), FeatureReader(tmp_path / "reference")
    ids = reader.image_ids()
    assert len(reader) == 7 and len(ids) == len(set(ids)) and set(ids) == set(scenes)
    for image_id in ids:
        np.testing.assert_array_equal(reader[image_id].features, expected[image_id].features)


def test_torchrun_two_processes_write_two_shards_read_as_one(tmp_path):
    scenes = make_shape_images(tmp_path / "images", 5, np.random.default_rng(1))
    write_boxes_json(tmp_path / "boxes.json", scenes)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vilbert.features", "extract", "--images", str(tmp_path / "images"),
               "--output", str(tmp_path / "out"), "--boxes", "gt", "--boxes-file", str(tmp_path / "boxes.json"),
               "--backbone", "pixels", "--num-workers", "0", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = sorted(p.name for p in (tmp_path / "out").glob("*.lmdb"))
    assert shards == ["part-0-of-2.lmdb", "part-1-of-2.lmdb"]
    counts = [len(FeatureReader(tmp_path / "out" / s)) for s in shards]
    assert counts == [3, 2]  # every second image of the sorted list
    reader = FeatureReader(tmp_path / "out")
    assert len(reader) == 5 and set(reader.image_ids()) == set(scenes)
    single = run_extraction(tmp_path / "images", tmp_path / "single", boxes_file=tmp_path / "boxes.json", progress=False)
    assert single.written == 5
    for image_id in scenes:
        np.testing.assert_array_equal(reader[image_id].features, FeatureReader(tmp_path / "single")[image_id].features)


def test_resume_with_a_different_world_size_skips_images_in_any_store(tmp_path, monkeypatch):
    scenes = make_shape_images(tmp_path / "images", 5, np.random.default_rng(2))
    write_boxes_json(tmp_path / "some.json", {k: scenes[k] for k in sorted(scenes)[:3]})
    write_boxes_json(tmp_path / "all.json", scenes)
    first = run_extraction(tmp_path / "images", tmp_path / "out", boxes_file=tmp_path / "some.json", progress=False)
    assert first.written == 3  # a single process wrote OUTPUT itself
    written = 0
    for rank in (0, 1):  # then a 2-rank run, one rank after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = run_extraction(tmp_path / "images", tmp_path / "out", boxes_file=tmp_path / "all.json", progress=False)
        assert result.output.name == f"part-{rank}-of-2.lmdb"
        written += result.written
    assert written == 2
    reader = FeatureReader(tmp_path / "out")
    assert len(reader) == 5 and sorted(reader.image_ids()) == sorted(scenes)
