"""Helpers for the bad-input and safety tests: a checked VQA world, records written by another tool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from _taskdata_helpers import FEATURE_DIM, task_entry, vqa_world, write_tasks


def put_raw_record(store: Path, key, data: bytes) -> None:
    """Bytes put straight into a store under `key`, as a tool other than FeatureWriter would."""
    from vilbert.features.store import environment, release

    path = Path(store).resolve()
    with environment(path, write=True).begin(write=True) as txn:
        txn.put(str(key).encode(), data)
    release(path)


def put_foreign_record(store: Path, key, boxes, features, image_h: int = 60, image_w: int = 80) -> None:
    """A float32 record put straight into a store, unchecked (NaN, boxes outside the image...)."""
    from vilbert.features.store import FLAG_FLOAT32, FORMAT_VERSION, HEADER, MAGIC

    boxes, features = np.asarray(boxes, "<f4"), np.asarray(features, "<f4")
    header = HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_FLOAT32, len(boxes), features.shape[1], 0, image_h, image_w, 0)
    put_raw_record(store, key, header + boxes.tobytes() + features.tobytes())


def checked_vqa_world(root: Path, vocabulary=("red", "blue", "green")) -> Path:
    """vqa_world with its answer vocabulary written out and a tasks file; returns the tasks file."""
    dataroot = vqa_world(root)
    (dataroot / "cache").mkdir()
    (dataroot / "cache" / "train_label2ans.json").write_text(json.dumps(list(vocabulary)))
    return write_tasks(root / "tasks.yml", {"TASK1": task_entry(features_h5path1="features.lmdb")})


def tiny_model_config(**changes):
    """config/vilbert_tiny.json with the test stores' feature width (and `changes`)."""
    from vilbert.config import ViLBertConfig

    values = json.loads((Path(__file__).parents[1] / "config" / "vilbert_tiny.json").read_text())
    values.update({"v_feature_size": FEATURE_DIM, **changes})
    return ViLBertConfig.from_dict(values)
