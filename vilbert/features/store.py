"""The region-feature store: one LMDB record per image, no pickle.

A record is a fixed 32-byte little-endian header followed by raw little-endian arrays:

    offset 0   4s   magic b"VLBF"
           4   u16  format version (1)
           6   u16  flags: bit 0 = features are float32 (else float16), bit 1 = has cls_prob
           8   u32  num_boxes n (>= 1)
          12   u32  feature_dim D
          16   u32  cls_dim C (0 without cls_prob)
          20   u32  image_h
          24   u32  image_w
          28   u32  reserved (0)
          32        boxes     float32 [n, 4]  x1, y1, x2, y2 in pixels
                    features  float16 or float32 [n, D]
                    cls_prob  float16 [n, C]  (only with flag bit 1)

The key is `str(image_id)` in UTF-8. Every record describes itself, so stores of different feature
widths, precisions or class counts can be read side by side, and a record's length is known from its
header: a truncated or padded record is detected and reported with its key. Float16 features halve the
size of the float32 data the detectors produce (REFERENCE section 4) at no cost to ViLBERT, which
reads them through a Linear + LayerNorm.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

MAGIC = b"VLBF"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHIIIIII")  # 32 bytes
FLAG_FLOAT32 = 1
FLAG_CLS_PROB = 2
FLOAT16_MAX = 65504.0

# LMDB needs a map size up front; a writer starts here and doubles it whenever the map is full, so
# small stores stay small on file systems that allocate the whole map.
INITIAL_MAP_SIZE = 1 << 30


class FeatureStoreError(ValueError):
    """A feature store, or one of its records, is missing, malformed or inconsistent."""


@dataclass
class RawRecord:
    """One decoded record: arrays are read-only views over the record bytes (no copy)."""

    image_h: int
    image_w: int
    boxes: np.ndarray  # (n, 4) float32 pixels
    features: np.ndarray  # (n, D) float16 or float32
    cls_prob: np.ndarray | None  # (n, C) float16


def nonfinite_fields(boxes=None, features=None, cls_prob=None) -> list[str]:
    """The names of the given arrays that hold a NaN or an infinity ([] when all are finite)."""
    arrays = {"boxes": boxes, "features": features, "cls_prob": cls_prob}
    return [name for name, array in arrays.items() if array is not None and not np.isfinite(array).all()]


def encode_record(
    image_id, image_h, image_w, boxes, features, cls_prob=None, feature_dtype="float16"
) -> bytes:
    """Validate one image's regions and return the record bytes (see the module docstring)."""
    where = f"image {image_id}"
    if feature_dtype not in ("float16", "float32"):
        raise FeatureStoreError(f"{where}: feature_dtype must be float16 or float32, not {feature_dtype!r}")
    boxes = np.asarray(boxes, dtype=np.float32)
    features = np.asarray(features)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise FeatureStoreError(f"{where}: boxes must have shape (n, 4), got {boxes.shape}")
    n = boxes.shape[0]
    if n == 0:
        raise FeatureStoreError(f"{where}: no boxes (a record needs at least one region)")
    if features.ndim != 2 or features.shape[0] != n or features.shape[1] == 0:
        raise FeatureStoreError(f"{where}: features must have shape ({n}, D) to match boxes, got {features.shape}")
    bad = nonfinite_fields(boxes, features)
    if bad:
        raise FeatureStoreError(f"{where}: {bad[0]} contain NaN or inf")
    try:
        image_h, image_w = int(image_h), int(image_w)
    except (TypeError, ValueError):
        raise FeatureStoreError(f"{where}: image_h/image_w must be integers, got {image_h!r}, {image_w!r}") from None
    if image_h <= 0 or image_w <= 0:
        raise FeatureStoreError(f"{where}: image_h/image_w must be positive, got {image_h}, {image_w}")
    flags = FLAG_FLOAT32 if feature_dtype == "float32" else 0
    if not flags and features.size and np.abs(features).max() > FLOAT16_MAX:
        raise FeatureStoreError(
            f"{where}: features exceed the float16 range (largest |value| {np.abs(features).max():.3g} > "
            f"{FLOAT16_MAX:g}); store them as float32 (--float32, feature_dtype='float32')"
        )
    parts = [boxes.astype("<f4", copy=False), features.astype("<f4" if flags else "<f2", copy=False)]
    cls_dim = 0
    if cls_prob is not None:
        cls_prob = np.asarray(cls_prob)
        if cls_prob.ndim != 2 or cls_prob.shape[0] != n or cls_prob.shape[1] == 0:
            raise FeatureStoreError(f"{where}: cls_prob must have shape ({n}, C) to match boxes, got {cls_prob.shape}")
        if nonfinite_fields(cls_prob=cls_prob):
            raise FeatureStoreError(f"{where}: cls_prob contains NaN or inf")
        if cls_prob.size and np.abs(cls_prob).max() > FLOAT16_MAX:
            raise FeatureStoreError(f"{where}: cls_prob values exceed the float16 range")
        flags |= FLAG_CLS_PROB
        cls_dim = cls_prob.shape[1]
        parts.append(cls_prob.astype("<f2", copy=False))
    header = HEADER.pack(MAGIC, FORMAT_VERSION, flags, n, features.shape[1], cls_dim, image_h, image_w, 0)
    return b"".join([header] + [np.ascontiguousarray(p).tobytes() for p in parts])


def decode_record(key: str, buf, where: str = "") -> RawRecord:
    """Parse record bytes; any inconsistency raises FeatureStoreError naming the key (and store)."""
    place = f"record {key!r}" + (f" in {where}" if where else "")
    if len(buf) < HEADER.size:
        raise FeatureStoreError(f"{place} is truncated: {len(buf)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, flags, n, dim, cls_dim, image_h, image_w, _ = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FeatureStoreError(
            f"{place} is not a feature record (magic {magic!r}); a legacy store needs "
            "`python -m vilbert.features convert --from legacy-lmdb` first"
        )
    if version != FORMAT_VERSION:
        raise FeatureStoreError(f"{place} has format version {version}; this code reads version {FORMAT_VERSION}")
    if n == 0 or dim == 0 or image_h == 0 or image_w == 0 or (flags & FLAG_CLS_PROB and cls_dim == 0):
        # Our writer never writes these; read, they would give a NaN global region or infinite locations.
        raise FeatureStoreError(f"{place} is malformed: {n} boxes, {dim}-wide features, "
                                f"{cls_dim if flags & FLAG_CLS_PROB else 'no'} classes, image {image_w}x{image_h}")
    feat_dtype = np.dtype("<f4") if flags & FLAG_FLOAT32 else np.dtype("<f2")
    has_cls = bool(flags & FLAG_CLS_PROB)
    expected = HEADER.size + 16 * n + feat_dtype.itemsize * n * dim + (2 * n * cls_dim if has_cls else 0)
    if len(buf) != expected:
        raise FeatureStoreError(
            f"{place} is truncated or corrupt: {len(buf)} bytes, the header promises {expected} "
            f"({n} boxes x {dim} features)"
        )
    offset = HEADER.size
    boxes = np.frombuffer(buf, "<f4", 4 * n, offset).reshape(n, 4)
    offset += 16 * n
    features = np.frombuffer(buf, feat_dtype, n * dim, offset).reshape(n, dim)
    offset += feat_dtype.itemsize * n * dim
    cls_prob = np.frombuffer(buf, "<f2", n * cls_dim, offset).reshape(n, cls_dim) if has_cls else None
    return RawRecord(image_h, image_w, boxes, features, cls_prob)


def _store_exists(path: Path) -> bool:
    return (path / "data.mdb").is_file()


# py-lmdb refuses to open one environment twice in a process, and a forked child inherits its
# parent's handles, which it must not use. So every environment is opened here, once per process
# and path: readers built for the same store (two tasks on one store) share it, a writer upgrades
# it to writable, and a forked DataLoader worker closes its inherited handles and opens its own.
_ENVIRONMENTS: dict[str, tuple[lmdb.Environment, bool]] = {}  # resolved path -> (env, writable)
_ENVIRONMENTS_PID = os.getpid()


def environment(path, write: bool = False) -> lmdb.Environment:
    """The process's LMDB environment for the store at `path` (an absolute, resolved path)."""
    global _ENVIRONMENTS_PID
    if _ENVIRONMENTS_PID != os.getpid():
        for env, _ in _ENVIRONMENTS.values():
            env.close()  # the child's copy only; the parent's handle is untouched
        _ENVIRONMENTS.clear()
        _ENVIRONMENTS_PID = os.getpid()
    key = str(path)
    entry = _ENVIRONMENTS.get(key)
    if entry is not None:
        env, writable = entry
        if writable or not write:
            return env
        release(key)
    if write:
        map_size = INITIAL_MAP_SIZE
        if _store_exists(Path(key)):
            map_size = max(map_size, 2 * os.path.getsize(Path(key) / "data.mdb"))
        env = lmdb.open(key, map_size=map_size, subdir=True, readahead=False, meminit=False)
    else:
        # lock=False: readers never take LMDB's lock file, so read-only media and many DataLoader
        # workers are fine; readahead=False: reads are random by id, OS read-ahead only wastes cache.
        env = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=2048)
    _ENVIRONMENTS[key] = (env, write)
    return env


def release(path) -> None:
    """Close this process's environment for `path`, if open (the next user reopens it)."""
    entry = _ENVIRONMENTS.pop(str(path), None)
    if entry is not None:
        entry[0].close()


class FeatureWriter:
    """Write region features to an LMDB store directory (created if needed); resumable.

    Records are committed every `commit_every` puts and on close, also when the `with` block raises,
    because each record is complete on its own: an interrupted job keeps everything it committed, and
    a rerun skips those ids (`image_id in writer`).

        with FeatureWriter("features/train.lmdb") as w:
            if image_id not in w:
                w.put(image_id, image_h=480, image_w=640, boxes=boxes, features=feats, cls_prob=None)
    """

    def __init__(self, path, feature_dtype: str = "float16", commit_every: int = 256):
        if feature_dtype not in ("float16", "float32"):
            raise FeatureStoreError(f"feature_dtype must be float16 or float32, not {feature_dtype!r}")
        self.path = Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise FeatureStoreError(f"{self.path} exists and is not a directory (a store is an LMDB directory)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.feature_dtype = feature_dtype
        self.commit_every = commit_every
        self._env = environment(self.path, write=True)
        self._pending: dict[bytes, bytes] = {}

    def __contains__(self, image_id) -> bool:
        key = str(image_id).encode()
        if key in self._pending:
            return True
        with self._env.begin() as txn:
            return txn.get(key) is not None

    def __len__(self) -> int:
        with self._env.begin() as txn:
            stored = txn.stat()["entries"]
            new = sum(1 for key in self._pending if txn.get(key) is None)
        return stored + new

    def put(self, image_id, *, image_h, image_w, boxes, features, cls_prob=None) -> None:
        """Add (or replace) the record of one image. Arrays may be numpy or CPU tensors."""
        record = encode_record(image_id, image_h, image_w, boxes, features, cls_prob, self.feature_dtype)
        self._pending[str(image_id).encode()] = record
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Write the pending records in one transaction, growing the map when it is full."""
        if not self._pending:
            return
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in self._pending.items():
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
        self._pending.clear()

    def close(self) -> None:
        if self._env is None:
            return
        self.commit()
        self._env.sync()
        release(self.path)
        self._env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
