"""FeatureWriter / FeatureReader: round trips, shards, worker safety and the bad-input errors."""

import lmdb
import numpy as np
import pytest
import torch

from _features_helpers import random_record, write_store
from vilbert.features import FeatureReader, FeatureStoreError, FeatureWriter, MissingImageError, store_info


def test_round_trip_float16_with_global_region_and_locations(tmp_path):
    rng = np.random.default_rng(0)
    records = {str(i): random_record(rng, dim=24, classes=5) for i in range(5)}
    write_store(tmp_path / "s.lmdb", records)
    reader = FeatureReader(tmp_path / "s.lmdb")
    assert len(reader) == 5 and sorted(reader.image_ids()) == sorted(records)
    for image_id, rec in records.items():
        item = reader[int(image_id)]  # int ids work as well as str
        n = len(rec["boxes"])
        assert item.image_id == image_id and item.num_boxes == n + 1
        assert item.features.dtype == np.float32 and item.features.shape == (n + 1, 24)
        # float16 storage: relative error about 1e-3
        np.testing.assert_allclose(item.features[1:], rec["features"], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(item.features[0], item.features[1:].mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item.boxes, rec["boxes"])
        w, h = rec["image_w"], rec["image_h"]
        assert (item.image_h, item.image_w) == (h, w)
        b = rec["boxes"]
        expected = np.stack(
            [b[:, 0] / w, b[:, 1] / h, b[:, 2] / w, b[:, 3] / h, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (w * h)], 1
        )
        np.testing.assert_allclose(item.locations[1:], expected, rtol=1e-5)
        np.testing.assert_array_equal(item.locations[0], [0, 0, 1, 1, 1])
        np.testing.assert_allclose(item.cls_prob, rec["cls_prob"], atol=1e-3)


def test_float32_store_is_exact_and_no_cls_prob_is_none(tmp_path):
    rng = np.random.default_rng(1)
    rec = random_record(rng, n=3, dim=7)
    write_store(tmp_path / "s", {"a": rec}, feature_dtype="float32")
    item = FeatureReader(tmp_path / "s")["a"]
    np.testing.assert_array_equal(item.features[1:], rec["features"])
    assert item.cls_prob is None


def test_writer_accepts_tensors_and_reports_membership(tmp_path):
    with FeatureWriter(tmp_path / "s") as w:
        w.put(7, image_h=10, image_w=20, boxes=torch.tensor([[0, 0, 5, 5.0]]), features=torch.ones(1, 4))
        assert 7 in w and "7" in w and 8 not in w
    with FeatureWriter(tmp_path / "s") as w:  # reopened: resumable
        assert 7 in w and len(w) == 1


def test_shards_read_as_one_from_folder_or_list(tmp_path):
    rng = np.random.default_rng(2)
    a = {str(i): random_record(rng) for i in range(3)}
    b = {str(i): random_record(rng) for i in range(3, 7)}
    write_store(tmp_path / "shards" / "part-0-of-2.lmdb", a)
    write_store(tmp_path / "shards" / "part-1-of-2.lmdb", b)
    for source in (tmp_path / "shards", [tmp_path / "shards" / "part-0-of-2.lmdb", tmp_path / "shards" / "part-1-of-2.lmdb"]):
        reader = FeatureReader(source)
        assert len(reader) == 7 and set(reader.image_ids()) == set(a) | set(b)
        assert 5 in reader and "0" in reader and 9 not in reader
        np.testing.assert_array_equal(reader["5"].boxes, b["5"]["boxes"])
    info = store_info(tmp_path / "shards")
    assert info["count"] == 7 and info["feature_width"] == [16] and not info["has_cls_prob"]


def test_missing_id_names_id_and_store(tmp_path):
    write_store(tmp_path / "s.lmdb", {"1": random_record(np.random.default_rng(3))})
    reader = FeatureReader(tmp_path / "s.lmdb")
    with pytest.raises(KeyError) as err:
        reader[424242]
    assert isinstance(err.value, MissingImageError)
    assert "424242" in str(err.value) and "s.lmdb" in str(err.value)


def test_truncated_record_names_the_key(tmp_path):
    write_store(tmp_path / "s", {"99": random_record(np.random.default_rng(4))})
    env = lmdb.open(str(tmp_path / "s"))
    with env.begin(write=True) as txn:
        txn.put(b"99", txn.get(b"99")[:-10])
    env.close()
    with pytest.raises(FeatureStoreError, match="'99'.*truncated"):
        FeatureReader(tmp_path / "s")[99]


def test_not_a_store_and_bad_put_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureStoreError, match="no feature store at .*empty"):
        FeatureReader(tmp_path / "empty")
    with FeatureWriter(tmp_path / "s") as w:
        with pytest.raises(FeatureStoreError, match="image 5: features must have shape"):
            w.put(5, image_h=10, image_w=10, boxes=np.zeros((2, 4)), features=np.zeros((3, 8)))
        with pytest.raises(FeatureStoreError, match="image 6: no boxes"):
            w.put(6, image_h=10, image_w=10, boxes=np.zeros((0, 4)), features=np.zeros((0, 8)))
        with pytest.raises(FeatureStoreError, match="image 8: features exceed the float16 range.*float32"):
            w.put(8, image_h=10, image_w=10, boxes=np.zeros((1, 4)), features=np.full((1, 8), 1e6))
        with pytest.raises(FeatureStoreError, match="image 7: image_h/image_w must be positive"):
            w.put(7, image_h=0, image_w=10, boxes=np.zeros((1, 4)), features=np.zeros((1, 8)))


class _Items(torch.utils.data.Dataset):
    def __init__(self, reader, ids):
        self.reader, self.ids = reader, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return torch.from_numpy(self.reader[self.ids[i]].features[0])


def test_reader_works_in_forked_dataloader_workers(tmp_path):
    rng = np.random.default_rng(5)
    records = {str(i): random_record(rng, n=2, dim=8) for i in range(8)}
    write_store(tmp_path / "s", records)
    reader = FeatureReader(tmp_path / "s")
    expected = torch.stack([torch.from_numpy(reader[i].features[0]) for i in sorted(records)])  # opened in parent
    loader = torch.utils.data.DataLoader(_Items(reader, sorted(records)), batch_size=4, num_workers=2)
    got = torch.cat(list(loader))
    torch.testing.assert_close(got, expected)


def test_info_command(tmp_path, capsys):
    from vilbert.features.__main__ import main

    rng = np.random.default_rng(6)
    write_store(tmp_path / "s", {str(i): random_record(rng, n=n, dim=12, classes=3) for i, n in enumerate((2, 5, 9))})
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "images:          3" in out and "feature width:   12 (float16)" in out
    assert "min 2, median 5, max 9" in out and "yes (3 classes)" in out and "MiB" in out
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "no feature store at" in capsys.readouterr().err
