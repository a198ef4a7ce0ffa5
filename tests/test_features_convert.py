"""convert --from tsv|npy|legacy-lmdb: the originals' layouts (REFERENCE section 4), written here."""

import base64
import os
import pickle

import lmdb
import numpy as np
import pytest

from _features_helpers import random_record
from vilbert.features import FeatureReader
from vilbert.features.__main__ import main
from vilbert.features.convert import ConversionError, convert
from vilbert.safe_pickle import UnsafePickleError


def b64(array):
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32).tobytes()).decode()


def write_tsv(path, records, with_cls_prob=True):
    with open(path, "w") as f:
        for image_id, r in records.items():
            cols = [image_id, str(r["image_w"]), str(r["image_h"]), str(len(r["boxes"])), b64(r["boxes"]), b64(r["features"])]
            if with_cls_prob:
                cols.append(b64(r["cls_prob"]))
            f.write("\t".join(cols) + "\n")


def check_store(reader, records, with_cls_prob=True):
    assert sorted(reader.image_ids()) == sorted(records)
    for image_id, r in records.items():
        item = reader[image_id]
        np.testing.assert_array_equal(item.boxes, r["boxes"])
        np.testing.assert_allclose(item.features[1:], r["features"], rtol=1e-3, atol=1e-3)  # float16
        np.testing.assert_allclose(item.features[0], item.features[1:].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(item.locations[0], [0, 0, 1, 1, 1])
        b, w, h = r["boxes"], r["image_w"], r["image_h"]
        np.testing.assert_allclose(item.locations[1:, :4], b / [w, h, w, h], rtol=1e-6)
        np.testing.assert_allclose(item.locations[1:, 4], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (w * h), rtol=1e-5)
        assert (item.image_h, item.image_w) == (h, w)
        if with_cls_prob:
            np.testing.assert_allclose(item.cls_prob, r["cls_prob"], atol=1e-3)
        else:
            assert item.cls_prob is None


def test_tsv_with_cls_prob_round_trips_with_long_fields(tmp_path):
    rng = np.random.default_rng(0)
    # 36 x 2048 float32 = 393 kB of base64 per field: far beyond csv's default field limit.
    records = {"123": random_record(rng, n=36, dim=2048, classes=11), "9": random_record(rng, n=3, dim=2048, classes=11)}
    write_tsv(tmp_path / "a.tsv", records)
    assert main(["convert", "--from", "tsv", str(tmp_path / "a.tsv"), "--output", str(tmp_path / "s"), "--no-progress"]) == 0
    check_store(FeatureReader(tmp_path / "s"), records)


def test_several_tsv_files_without_cls_prob(tmp_path):
    rng = np.random.default_rng(1)
    a = {str(i): random_record(rng, dim=8) for i in range(3)}
    b = {str(i): random_record(rng, dim=8) for i in range(3, 5)}
    write_tsv(tmp_path / "a.tsv", a, with_cls_prob=False)
    write_tsv(tmp_path / "b.tsv", b, with_cls_prob=False)
    assert convert("tsv", [tmp_path / "a.tsv", tmp_path / "b.tsv"], tmp_path / "s", progress=False) == 5
    check_store(FeatureReader(tmp_path / "s"), {**a, **b}, with_cls_prob=False)


def test_bad_tsv_lines_name_file_and_line(tmp_path):
    rng = np.random.default_rng(2)
    r = random_record(rng, n=2, dim=8)
    good = ["5", str(r["image_w"]), str(r["image_h"]), "2", b64(r["boxes"]), b64(r["features"])]
    (tmp_path / "cols.tsv").write_text("\t".join(good) + "\n" + "\t".join(good[:4]) + "\n")
    with pytest.raises(ConversionError, match=r"cols.tsv, line 2: expected 6 or 7"):
        convert("tsv", tmp_path / "cols.tsv", tmp_path / "s1", progress=False)
    (tmp_path / "rows.tsv").write_text("\t".join(good[:3] + ["3"] + good[4:]) + "\n")
    with pytest.raises(ConversionError, match=r"rows.tsv, line 1 \(image 5\): field 'boxes'"):
        convert("tsv", tmp_path / "rows.tsv", tmp_path / "s2", progress=False)


def write_legacy_lmdb(path, items: dict):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for image_id, item in items.items():
            txn.put(str(image_id).encode(), pickle.dumps(item))
        txn.put(b"keys", pickle.dumps([str(k).encode() for k in items]))
    env.close()


def test_legacy_lmdb_beta_layout_base64(tmp_path):
    rng = np.random.default_rng(3)
    records = {str(i): random_record(rng, dim=32, classes=7) for i in (11, 12)}
    items = {
        k: {"image_id": k, "image_h": r["image_h"], "image_w": r["image_w"], "num_boxes": len(r["boxes"]),
            "boxes": b64(r["boxes"]), "features": b64(r["features"]), "cls_prob": b64(r["cls_prob"])}
        for k, r in records.items()
    }
    write_legacy_lmdb(tmp_path / "old.lmdb", items)
    assert convert("legacy-lmdb", tmp_path / "old.lmdb", tmp_path / "s", progress=False) == 2
    check_store(FeatureReader(tmp_path / "s"), records)


def test_legacy_lmdb_12in1_layout_numpy(tmp_path):
    rng = np.random.default_rng(4)
    records = {str(i): random_record(rng, dim=32) for i in (21, 22, 23)}
    items = {
        k: {"image_id": np.int64(k), "image_h": np.int64(r["image_h"]), "image_w": r["image_w"],
            "num_boxes": len(r["boxes"]), "boxes": r["boxes"], "features": r["features"]}
        for k, r in records.items()
    }
    write_legacy_lmdb(tmp_path / "old.lmdb", items)
    assert main(["convert", "--from", "legacy-lmdb", str(tmp_path / "old.lmdb"), "--output", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    check_store(FeatureReader(tmp_path / "s"), records, with_cls_prob=False)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_legacy_lmdb_with_reduce_payload_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    write_legacy_lmdb(tmp_path / "evil.lmdb", {"1": {"image_id": 1, "boxes": _Payload(str(marker))}})
    with pytest.raises(UnsafePickleError, match=r"evil.lmdb, key '1'.*refused to unpickle"):
        convert("legacy-lmdb", tmp_path / "evil.lmdb", tmp_path / "s", progress=False)
    assert not marker.exists()
    assert main(["convert", "--from", "legacy-lmdb", str(tmp_path / "evil.lmdb"), "--output", str(tmp_path / "t")]) == 2
    assert "refused to unpickle" in capsys.readouterr().err and not marker.exists()


def test_12in1_npy_files(tmp_path):
    rng = np.random.default_rng(5)
    records = {}
    (tmp_path / "npy").mkdir()
    for image_id in ("COCO_1", "COCO_2"):
        r = random_record(rng, n=5, dim=16, classes=4)
        # 12-in-1 saves num_features rows and counts in num_boxes only those with a non-zero score.
        padded = {k: np.concatenate([r[k], np.zeros((2, r[k].shape[1]), np.float32)]) for k in ("boxes", "features", "cls_prob")}
        np.save(tmp_path / "npy" / f"{image_id}.npy", {
            "image_id": image_id, "image_height": r["image_h"], "image_width": r["image_w"], "num_boxes": 5,
            "bbox": padded["boxes"], "features": padded["features"], "cls_prob": padded["cls_prob"],
            "objects": np.zeros(7, np.int64)})
        records[image_id] = r
    assert convert("npy", [tmp_path / "npy"], tmp_path / "s", progress=False) == 2
    check_store(FeatureReader(tmp_path / "s"), records)
    np.save(tmp_path / "plain.npy", np.zeros((2, 3)))
    with pytest.raises(ConversionError, match="plain.npy: expected a pickled dict"):
        convert("npy", [tmp_path / "plain.npy"], tmp_path / "s2", progress=False)
