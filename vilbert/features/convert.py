"""Convert region features from the formats users have (REFERENCE section 4) into a feature store.

    python -m vilbert.features convert --from tsv FILE.tsv [FILE2.tsv ...] --output STORE
    python -m vilbert.features convert --from npy DIR_OR_FILES.npy ... --output STORE
    python -m vilbert.features convert --from legacy-lmdb OLD.lmdb [...] --output STORE

- tsv: bottom-up-attention files, one image per line, tab-separated columns image_id, image_w,
  image_h, num_boxes, boxes, features[, cls_prob]; the last three are base64 of float32 arrays
  [n, 4], [n, D], [n, C]. Lines are split on tabs directly (base64 has none), so fields of any
  length work; no csv field-size limit applies. A header line starting with "image_id" is skipped.
- npy: 12-in-1 per-image `.npy` files, each a pickled dict (bbox, features, num_boxes,
  image_width, image_height, image_id, optionally cls_prob). The pickle inside is read with the
  restricted unpickler, never with np.load(allow_pickle=True).
- legacy-lmdb: the originals' LMDBs, key str(image_id) -> a pickled dict, either the beta layout (the
  TSV fields with base64 strings) or the 12-in-1 layout (numpy arrays), plus key b"keys" -> a pickled
  id list (not needed: we walk the database). Read with the restricted unpickler.
"""

from __future__ import annotations

import binascii
from pathlib import Path

import numpy as np

from vilbert.features.store import FeatureWriter, environment
from vilbert.safe_pickle import safe_load

TSV_COLUMNS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features", "cls_prob")


class ConversionError(ValueError):
    """An input record that cannot be converted; the message names the file and record."""


def _from_base64(text, rows: int, field: str, where: str) -> np.ndarray:
    """base64 text of float32 values -> (rows, k) float32 array."""
    try:
        raw = binascii.a2b_base64(text)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ConversionError(f"{where}: field {field!r} is not valid base64 ({exc})") from None
    if rows <= 0 or len(raw) % (4 * rows):
        raise ConversionError(
            f"{where}: field {field!r} holds {len(raw)} bytes, not a whole number of float32 rows for {rows} boxes"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(rows, -1)


def record_from_dict(item: dict, where: str, image_id=None) -> tuple[str, dict]:
    """One legacy record (beta base64 strings or 12-in-1 numpy arrays) -> (image id, FeatureWriter.put kwargs)."""
    if not isinstance(item, dict):
        raise ConversionError(f"{where}: expected a dict record, found {type(item).__name__}")

    def pick(*names, required=True):
        for name in names:
            if name in item and item[name] is not None:
                return item[name]
        if required:
            raise ConversionError(f"{where}: record has no {' / '.join(names)} field")
        return None

    if image_id is None:
        image_id = pick("image_id")
    if isinstance(image_id, np.ndarray):
        image_id = image_id.item()
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    try:
        image_h = int(pick("image_h", "image_height"))
        image_w = int(pick("image_w", "image_width"))
        num_boxes = pick("num_boxes", required=False)
        num_boxes = None if num_boxes is None else int(num_boxes)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise ConversionError(f"{where}: image_h/image_w/num_boxes are not finite numbers") from None

    def array(field, *names, required=True):
        value = pick(*names, required=required)
        if value is None:
            return None
        if isinstance(value, (str, bytes)):
            if num_boxes is None:
                raise ConversionError(f"{where}: base64 field {field!r} needs num_boxes")
            return _from_base64(value, num_boxes, field, where)
        try:
            value = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):  # ragged lists, dicts, strings inside
            raise ConversionError(f"{where}: field {field!r} is not an array of numbers") from None
        if value.ndim != 2:
            raise ConversionError(f"{where}: field {field!r} should be 2-d, got shape {value.shape}")
        return value

    boxes = array("boxes", "boxes", "bbox")
    features = array("features", "features")
    cls_prob = array("cls_prob", "cls_prob", required=False)
    rows = len(boxes)
    if num_boxes is not None:
        # 12-in-1's extractor saves num_features rows but counts as num_boxes only those with a
        # non-zero score; keep those, as its reader does.
        if num_boxes > rows or num_boxes > len(features):
            raise ConversionError(f"{where}: num_boxes {num_boxes} but only {rows} boxes / {len(features)} features")
        rows = num_boxes if num_boxes > 0 else rows
    if boxes.shape[1] != 4:
        raise ConversionError(f"{where}: boxes should have 4 columns, got {boxes.shape}")
    if len(features) < rows or (cls_prob is not None and len(cls_prob) < rows):
        raise ConversionError(f"{where}: features/cls_prob have fewer rows than the {rows} boxes")
    return image_id, dict(
        image_h=image_h,
        image_w=image_w,
        boxes=boxes[:rows],
        features=features[:rows],
        cls_prob=None if cls_prob is None else cls_prob[:rows],
    )


def read_tsv(path):
    """Yield (image id, put kwargs) for each line of a bottom-up-attention TSV file."""
    path = Path(path)
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip(b"\r\n")
            if not line or (line_number == 1 and line.startswith(b"image_id\t")):
                continue
            fields = line.split(b"\t")
            where = f"{path}, line {line_number}"
            if len(fields) not in (6, 7):
                raise ConversionError(
                    f"{where}: expected 6 or 7 tab-separated columns ({', '.join(TSV_COLUMNS[:6])}[, cls_prob]), "
                    f"got {len(fields)}"
                )
            item = dict(zip(TSV_COLUMNS, fields))
            try:
                item["num_boxes"] = int(item["num_boxes"])
            except ValueError:
                raise ConversionError(f"{where}: num_boxes {item['num_boxes'][:20]!r} is not an integer") from None
            item["image_id"] = item["image_id"].decode()
            yield record_from_dict(item, f"{where} (image {item['image_id']})")


def _read_npy_pickle(path: Path):
    """The dict inside a 12-in-1 .npy file (an object array holding a pickle), read safely."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        except ValueError as exc:
            raise ConversionError(f"{path}: not a .npy file ({exc})") from None
        if dtype != np.dtype(object):
            raise ConversionError(f"{path}: expected a pickled dict inside the .npy, found a {dtype} array {shape}")
        value = safe_load(handle, source=str(path))
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(()).item()
    return value


def read_npy(paths):
    """Yield (image id, put kwargs) for 12-in-1 .npy files (directories are searched for *.npy)."""
    for path in paths:
        path = Path(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        for file in files:
            item = _read_npy_pickle(file)
            image_id = item.get("image_id", file.stem) if isinstance(item, dict) else None
            yield record_from_dict(item, str(file), image_id=image_id)


def read_legacy_lmdb(path):
    """Yield (image id, put kwargs) from one of the originals' pickled LMDBs (both record layouts)."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise ConversionError(f"{path}: not an LMDB directory (no data.mdb)")
    with environment(path.resolve()).begin() as txn:
        for key, value in txn.cursor():
            if key == b"keys":
                continue
            image_id = key.decode()
            where = f"{path}, key {image_id!r}"
            yield record_from_dict(safe_load(value, source=where), where, image_id=image_id)


def convert(source: str, inputs, output, feature_dtype: str = "float16", progress: bool = True) -> int:
    """Convert `inputs` of format `source` (tsv, npy, legacy-lmdb) into the store `output`."""
    from tqdm import tqdm

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for path in inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
    if source == "tsv":
        records = (r for path in inputs for r in read_tsv(path))
    elif source == "npy":
        records = read_npy(inputs)
    elif source == "legacy-lmdb":
        records = (r for path in inputs for r in read_legacy_lmdb(path))
    else:
        raise ValueError(f"--from must be tsv, npy or legacy-lmdb, not {source!r}")
    written = 0
    with FeatureWriter(output, feature_dtype=feature_dtype) as writer:
        for image_id, record in tqdm(records, desc=f"convert {source}", unit="img", disable=not progress):
            writer.put(image_id, **record)
            written += 1
    return written
