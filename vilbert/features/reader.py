"""FeatureReader: one or several feature stores (shards) read as one, safe in DataLoader workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from vilbert.features.store import (FeatureStoreError, RawRecord, decode_record, environment, nonfinite_fields,
                                   release)

# Row 0 of every region tensor is the whole image (REFERENCE section 1).
GLOBAL_LOCATION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], dtype=np.float32)


class MissingImageError(KeyError):
    """An image id that none of the reader's stores holds."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass
class RegionItem:
    """The regions of one image, as every dataset reads them.

    n = number of detected (or given) boxes in the store.
    """

    image_id: str
    features: np.ndarray  # (n+1, D) float32; row 0 = global region = mean of the n regions
    locations: np.ndarray  # (n+1, 5) float32 [x1/W, y1/H, x2/W, y2/H, area/(W*H)]; row 0 = [0,0,1,1,1]
    boxes: np.ndarray  # (n, 4) float32 pixels x1, y1, x2, y2
    image_h: int
    image_w: int
    num_boxes: int  # n + 1 (counts the global region, as the originals' readers do)
    cls_prob: np.ndarray | None  # (n, C) float32 class distribution, or None


def box_locations(boxes: np.ndarray, image_h: float, image_w: float) -> np.ndarray:
    """(n, 4) pixel boxes -> (n, 5) float32 locations [x1/W, y1/H, x2/W, y2/H, area/(W*H)]."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scale = np.array([image_w, image_h, image_w, image_h], dtype=np.float32)
    locations = np.empty((boxes.shape[0], 5), dtype=np.float32)
    locations[:, :4] = boxes / scale
    locations[:, 4] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (float(image_w) * float(image_h))
    return locations


# Casts of at most this many elements run on the calling thread in torch (its parallel grain size):
# no thread-pool hand-off, and no contention with DataLoader workers or the training process.
_CAST_CHUNK = 32768


def to_float32(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 (or float32) (n, k) -> float32, into `out` if given.

    numpy casts float16 element by element; torch uses the CPU's F16C instructions, about 6x faster
    here (benchmarks/bench_features.py), so the cast goes through torch, in row chunks small enough to
    stay on this thread. `array` should be writable (torch warns about read-only memory); the reader
    decodes from its own copy of each record, so it is.
    """
    import torch

    if out is None:
        out = np.empty(array.shape, dtype=np.float32)
    if array.dtype == np.float32 or array.size == 0:
        np.copyto(out, array)
        return out
    source, target = torch.from_numpy(array), torch.from_numpy(out)
    rows = max(1, _CAST_CHUNK // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        target[start : start + rows].copy_(source[start : start + rows])
    return out


def find_stores(path_or_paths) -> list[Path]:
    """Resolve a store directory, a folder of `*.lmdb` shards, or a list of those, to store paths.

    A directory that holds `data.mdb` is a store; its `*.lmdb` children that are stores count too
    (an extraction run first by one process and resumed by several leaves both).
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        path_or_paths = [path_or_paths]
    stores: list[Path] = []
    for raw in path_or_paths:
        path = Path(raw)
        found = []
        if (path / "data.mdb").is_file():
            found.append(path)
        if path.is_dir():
            found += sorted(p for p in path.glob("*.lmdb") if (p / "data.mdb").is_file())
        if not found:
            raise FeatureStoreError(
                f"no feature store at {path}: expected an LMDB directory with data.mdb, or a folder of *.lmdb shards"
            )
        stores += [p.resolve() for p in found if p.resolve() not in stores]
    if not stores:
        raise FeatureStoreError("no feature store paths given")
    return stores


class FeatureReader:
    """Read region features by image id from one or several stores.

        reader = FeatureReader("features/")          # a store, a folder of shards, or a list
        len(reader); 42 in reader; reader.image_ids()
        item = reader[42]                             # RegionItem; int or str ids

    The LMDB environments are opened lazily, once per process (vilbert.features.store.environment),
    so a reader built before a DataLoader forks (or pickled into a spawned worker) works in every
    worker, and several readers of one store share its environment.
    Shards are meant to hold disjoint ids; if an id is in several, the first store listed wins.
    """

    def __init__(self, path_or_paths):
        self.paths = find_stores(path_or_paths)
        self._ids: list[str] | None = None

    def _environments(self) -> list[lmdb.Environment]:
        return [environment(p) for p in self.paths]

    def _describe(self) -> str:
        if len(self.paths) == 1:
            return f"the feature store {self.paths[0]}"
        return f"the feature stores {', '.join(str(p) for p in self.paths)}"

    def _raw(self, image_id):
        """(key, record bytes, store path): one copy out of LMDB's map into a private, writable buffer."""
        key = str(image_id).encode()
        for attempt in range(2):
            try:
                for env, path in zip(self._environments(), self.paths):
                    with env.begin(buffers=True) as txn:
                        view = txn.get(key)
                        if view is not None:
                            return key.decode(), bytearray(view), path
                break
            except lmdb.MapResizedError:
                # Another process grew the store while we read it: reopen and try again.
                for path in self.paths:
                    release(path)
        raise MissingImageError(f"image id {str(image_id)!r} is not in {self._describe()}")

    def __contains__(self, image_id) -> bool:
        key = str(image_id).encode()
        for env in self._environments():
            with env.begin() as txn:
                if txn.get(key) is not None:
                    return True
        return False

    def image_ids(self) -> list[str]:
        """All image ids (strings), in store order; read once and cached."""
        if self._ids is None:
            ids, seen = [], set()
            for env in self._environments():
                with env.begin() as txn:
                    for key in txn.cursor().iternext(keys=True, values=False):
                        image_id = bytes(key).decode()
                        if len(self.paths) == 1 or image_id not in seen:
                            ids.append(image_id)
                            seen.add(image_id)
            self._ids = ids
        return self._ids

    def __len__(self) -> int:
        if len(self.paths) == 1:
            with self._environments()[0].begin() as txn:
                return txn.stat()["entries"]
        return len(self.image_ids())

    def __iter__(self):
        return iter(self.image_ids())

    def raw(self, image_id):
        """The stored record as it is (float16 features, no global row), for tools like `info`."""
        key, buf, path = self._raw(image_id)
        return decode_record(key, buf, str(path))

    def __getitem__(self, image_id) -> RegionItem:
        key, buf, path = self._raw(image_id)
        record = decode_record(key, buf, str(path))
        item = region_item(key, record)
        check_finite(item, record, f"record {key!r} in {path}")
        return item

    def __repr__(self):
        return f"FeatureReader({[str(p) for p in self.paths]})"


def region_item(image_id: str, record: RawRecord) -> RegionItem:
    """A decoded store record as a RegionItem: float32 features with the global row 0 (their mean)
    and the 5-d locations. The record's arrays must be writable (see to_float32)."""
    n, dim = record.features.shape
    features = np.empty((n + 1, dim), dtype=np.float32)  # (n+1, D)
    to_float32(record.features, out=features[1:])
    np.mean(features[1:], axis=0, out=features[0])
    locations = np.empty((n + 1, 5), dtype=np.float32)  # (n+1, 5)
    locations[0] = GLOBAL_LOCATION
    locations[1:] = box_locations(record.boxes, record.image_h, record.image_w)
    cls_prob = None if record.cls_prob is None else to_float32(record.cls_prob)
    return RegionItem(
        image_id=image_id,
        features=features,
        locations=locations,
        boxes=record.boxes.copy(),
        image_h=record.image_h,
        image_w=record.image_w,
        num_boxes=n + 1,
        cls_prob=cls_prob,
    )


def check_finite(item: RegionItem, record: RawRecord, place: str) -> None:
    """FeatureStoreError naming `place` when a record holds NaN or inf: our writers refuse them, but a
    store written by another tool may have them, and one would poison every step it reaches.

    Cheap on the common path: any NaN or inf in the features makes their mean (row 0) non-finite, and
    in the boxes their locations, so only row 0, the locations and the column sums of cls_prob are
    tested; the full test runs only then (a mean that overflowed float32 is not an error)."""
    cheap = np.isfinite(item.features[0]).all() and np.isfinite(item.locations).all()
    if cheap and (item.cls_prob is None or np.isfinite(item.cls_prob.sum(0)).all()):
        return
    bad = nonfinite_fields(record.boxes, record.features, record.cls_prob)
    if bad:
        raise FeatureStoreError(f"{place}: {', '.join(bad)} contain NaN or inf (a store written by another tool?)")
    if not np.isfinite(item.locations).all():
        raise FeatureStoreError(f"{place}: box areas overflow float32 (boxes far outside the "
                                f"{record.image_w}x{record.image_h} image)")


def store_info(path_or_paths) -> dict:
    """Summary of a store (or shards): count, feature width, boxes per image, cls_prob, size on disk.

    Only the 32-byte record headers are read (through LMDB's memory map), so this is quick even for
    millions of records.
    """
    from vilbert.features.store import FLAG_CLS_PROB, FLAG_FLOAT32, HEADER, MAGIC

    paths = find_stores(path_or_paths)
    counts, widths, dtypes, class_dims, not_ours = [], set(), set(), set(), 0
    for path in paths:
        with environment(path).begin(buffers=True) as txn:
            for key, value in txn.cursor():
                if len(value) < HEADER.size or bytes(value[:4]) != MAGIC:
                    not_ours += 1
                    continue
                _, _, flags, n, dim, cls_dim, _, _, _ = HEADER.unpack_from(value, 0)
                counts.append(n)
                widths.add(dim)
                dtypes.add("float32" if flags & FLAG_FLOAT32 else "float16")
                class_dims.add(cls_dim if flags & FLAG_CLS_PROB else 0)
    size = sum(f.stat().st_size for p in paths for f in p.iterdir() if f.is_file())
    count = len(counts)
    counts = np.array(counts or [0])
    return {
        "stores": [str(p) for p in paths],
        "count": count,
        "feature_width": sorted(widths),
        "feature_dtype": sorted(dtypes),
        "boxes_per_image": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())},
        "has_cls_prob": bool(class_dims) and 0 not in class_dims,
        "cls_prob_width": sorted(c for c in class_dims if c),
        "other_records": not_ours,
        "size_on_disk_bytes": int(size),
    }
