"""Fuzzing (hypothesis) of the loaders that read files from outside: the feature-store reader, the
TSV / npy / legacy-LMDB converters, the model config JSON and the tasks YAML. Whatever the bytes,
only our documented errors come out (each a ValueError subclass naming the file or record, or the
restricted unpickler's refusal), never another exception, a hang or a crash, and what is read back
is exactly what was written."""

import base64
import json
import os
import pickle
import string

import numpy as np
import pytest
import torch  # noqa: F401 (the reader's first cast imports it: seconds that must not count against a deadline)
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vilbert.features.convert import ConversionError, convert, read_tsv, record_from_dict  # noqa: E402
from vilbert.features.store import HEADER, MAGIC, FeatureStoreError, decode_record, encode_record  # noqa: E402

# Fast and repeatable in CI: a few dozen examples each, no example database, a deadline against hangs
# (generous: a shared CI machine can be slow; each example takes milliseconds).
# VILBERT_FUZZ_EXAMPLES=2000 (and VILBERT_FUZZ_RANDOM=1 for fresh inputs) searches deeper by hand.
FUZZ = settings(max_examples=int(os.environ.get("VILBERT_FUZZ_EXAMPLES", 40)), deadline=5000,
                derandomize=not os.environ.get("VILBERT_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CONVERSION_ERRORS = (ConversionError, FeatureStoreError, pickle.UnpicklingError)  # UnsafePickleError included

small_floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), small_floats, st.text(max_size=8),
                    st.binary(max_size=16))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                             max_size=4), max_leaves=12)


def _header(n, dim, cls_dim, flags, h=10, w=10, version=1, magic=MAGIC):
    return HEADER.pack(magic, version, flags, n, dim, cls_dim, h, w, 0)


@FUZZ
@given(st.binary(max_size=200))
def test_record_decoder_on_arbitrary_bytes(data):
    try:
        decode_record("k", data, "fuzz.lmdb")
    except FeatureStoreError as exc:
        assert "record 'k' in fuzz.lmdb" in str(exc)


@FUZZ
@given(n=st.integers(0, 2**32 - 1), dim=st.integers(0, 2**32 - 1), cls_dim=st.integers(0, 2**32 - 1),
       flags=st.integers(0, 3), body=st.binary(max_size=256))
def test_record_decoder_on_headers_promising_anything(n, dim, cls_dim, flags, body):
    """A header may promise billions of boxes: the length check comes before any allocation."""
    try:
        record = decode_record("k", _header(n, dim, cls_dim, flags) + body)
    except FeatureStoreError:
        return
    assert record.boxes.shape == (n, 4) and record.features.shape == (n, dim)


@FUZZ
@given(n=st.integers(1, 5), dim=st.integers(1, 6), classes=st.integers(0, 4), float32=st.booleans(),
       seed=st.integers(0, 2**31))
def test_records_read_back_exactly_what_was_written(n, dim, classes, float32, seed):
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 100, (n, 4)).astype(np.float32)
    features = rng.normal(0, 100, (n, dim)).astype(np.float32)
    cls_prob = rng.uniform(0, 1, (n, classes)).astype(np.float32) if classes else None
    data = encode_record(1, 50, 60, boxes, features, cls_prob, "float32" if float32 else "float16")
    record = decode_record("1", data)
    np.testing.assert_array_equal(record.boxes, boxes)
    np.testing.assert_array_equal(record.features, features if float32 else features.astype(np.float16))
    if cls_prob is not None:
        np.testing.assert_array_equal(record.cls_prob, cls_prob.astype(np.float16))
    assert (record.image_h, record.image_w) == (50, 60)
    # One flipped byte of the arrays is read as another number, never as another shape.
    corrupt = bytearray(data)
    corrupt[-1] ^= 0xFF
    assert decode_record("1", corrupt).features.shape == (n, dim)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow in the mean of random bit patterns
@FUZZ
@given(n=st.integers(0, 3), dim=st.integers(0, 3), cls_dim=st.integers(0, 2), flags=st.integers(0, 3),
       h=st.integers(0, 3), w=st.integers(0, 3), seed=st.integers(0, 2**31))
@example(n=0, dim=2, cls_dim=0, flags=1, h=5, w=5, seed=0)  # no boxes: a NaN global region
@example(n=1, dim=2, cls_dim=0, flags=1, h=0, w=5, seed=0)  # image height 0: infinite locations
def test_reader_on_records_of_any_header_and_bits(tmp_path, n, dim, cls_dim, flags, h, w, seed):
    """Records of other tools with any header and any bit patterns (NaN and inf among them), read
    through FeatureReader: either finite regions or a FeatureStoreError naming the key."""
    from _reliability_helpers import put_raw_record
    from vilbert.features import FeatureReader

    itemsize = 4 if flags & 1 else 2
    size = 16 * n + itemsize * n * dim + (2 * n * cls_dim if flags & 2 else 0)
    body = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    put_raw_record(tmp_path / "s.lmdb", "k", _header(n, dim, cls_dim, flags, h, w) + body)
    try:
        item = FeatureReader(tmp_path / "s.lmdb")["k"]
    except FeatureStoreError as exc:
        assert "record 'k'" in str(exc) and "\n" not in str(exc)
        return
    assert np.isfinite(item.features).all() and np.isfinite(item.locations).all() and np.isfinite(item.boxes).all()
    assert item.cls_prob is None or np.isfinite(item.cls_prob).all()


@FUZZ
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_tsv_reader_on_arbitrary_lines(tmp_path, lines):
    path = tmp_path / "f.tsv"
    path.write_bytes(b"\n".join(lines))
    try:
        for image_id, record in read_tsv(path):
            assert record["boxes"].shape[1] == 4 and len(record["features"]) == len(record["boxes"])
    except ConversionError as exc:
        assert str(path) in str(exc)


def _b64(array) -> bytes:
    return base64.b64encode(np.asarray(array, np.float32).tobytes())


@FUZZ
@given(st.lists(st.sampled_from(["id", "w", "h", "n", "boxes", "features", "cls"]), min_size=5, max_size=8),
       st.lists(st.one_of(st.integers(-3, 5), small_floats, st.text(string.printable, max_size=6)), min_size=4,
                max_size=4),
       st.lists(small_floats, min_size=3, max_size=3))
@example(["id", "w", "h", "n", "boxes", "features", "cls"], [7, 10, 10, 2], [3.0, 0.5, 0.25])  # the originals' layout
@example(["id", "w", "h", "n", "boxes", "features"], [7, 10, 10, 2], [3.0, 0.5, 0.25])  # without class scores
def test_tsv_conversion_of_plausible_lines(tmp_path, columns, fields, numbers):
    """Lines made of plausible columns in any order and count, with odd values: converted or refused."""
    made = {"id": str(fields[0]).encode(), "w": str(fields[1]).encode(), "h": str(fields[2]).encode(),
            "n": str(fields[3]).encode(), "boxes": _b64([[0, 0, 4, 4], [1, 1, numbers[0], 3]]),
            "features": _b64([[numbers[1], 1], [2, 3]]), "cls": _b64([[0.5], [numbers[2]]])}
    (tmp_path / "f.tsv").write_bytes(b"\t".join(made[c] for c in columns) + b"\n")
    try:
        convert("tsv", tmp_path / "f.tsv", tmp_path / "store", progress=False)
    except CONVERSION_ERRORS:
        return
    # Converted: what is read back is exactly what the line held (no silent wrong value).
    from vilbert.features import FeatureReader

    reader = FeatureReader(tmp_path / "store")
    (image_id,) = reader.image_ids()
    item = reader[image_id]
    np.testing.assert_array_equal(item.boxes, np.float32([[0, 0, 4, 4], [1, 1, numbers[0], 3]]))
    np.testing.assert_array_equal(item.features[-2:], np.float32([[numbers[1], 1], [2, 3]]))


@FUZZ
@given(st.booleans(), st.binary(max_size=300))
def test_npy_converter_on_arbitrary_bytes(tmp_path, with_magic, data):
    (tmp_path / "x.npy").write_bytes(np.lib.format.MAGIC_PREFIX + data if with_magic else data)
    try:
        convert("npy", [tmp_path / "x.npy"], tmp_path / "store", progress=False)
    except CONVERSION_ERRORS as exc:
        assert "x.npy" in str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(["image_id", "image_h", "image_w", "image_height", "image_width", "num_boxes",
                                        "boxes", "bbox", "features", "cls_prob"]), values, max_size=10))
@example({"image_h": float("inf")})  # found by the fuzzer: int(inf) raised OverflowError
@example({"image_h": 1, "image_w": 1, "num_boxes": "x"})
@example({"image_h": 1, "image_w": 1, "boxes": [[1, 2], [3]], "features": [[{}]]})  # found: ragged, dicts
def test_legacy_record_of_any_content(record):
    """What a legacy LMDB or .npy pickle may hold: dicts of anything, refused or converted sensibly."""
    try:
        image_id, kwargs = record_from_dict(record, "old.lmdb, key '1'", image_id="1")
        encode_record(image_id, **kwargs)
    except (ConversionError, FeatureStoreError) as exc:
        assert "old.lmdb, key '1'" in str(exc) or "image 1" in str(exc)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.dictionaries(st.text(max_size=20), values, max_size=6),
                 st.dictionaries(st.sampled_from(["hidden_size", "num_attention_heads", "v_biattention_id",
                                                  "t_biattention_id", "v_feature_size", "fusion_method",
                                                  "hidden_act", "visual_target"]), values, max_size=5)))
def test_config_json_loader(tmp_path, content):
    from vilbert.config import ViLBertConfig

    path = tmp_path / "config.json"
    try:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    except (TypeError, ValueError, UnicodeEncodeError):
        return  # not writable as JSON text (a lone surrogate, bytes): nothing to load
    try:
        config = ViLBertConfig.from_json_file(path)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert config.hidden_size % config.num_attention_heads == 0


task_fields = st.sampled_from(["name", "type", "loss", "dataroot", "features_h5path1", "features_h5path2",
                               "train_annotations_jsonpath", "val_annotations_jsonpath", "max_seq_length",
                               "max_region_num", "batch_size", "eval_batch_size", "train_split", "val_split", "lr",
                               "num_epoch", "task_id", "task_token", "reader", "process", "start_iteration"])


task_keys = st.sampled_from(["TASK1", "TASK2", "x"]) | st.text(max_size=6) | st.integers()
task_values = values | st.integers() | st.sampled_from(["4e-5", "-1", "nan", "1e400", "../x", "VL-logit"])


@FUZZ
@given(st.one_of(st.text(max_size=120), st.dictionaries(task_keys, values | st.dictionaries(task_fields, task_values),
                                                        max_size=3)),
       st.dictionaries(task_fields, task_values, max_size=6))
@example({"TASK1": {"\n": None}}, {})  # found by the fuzzer: a two-line message
@example({"TASK\n1": {}}, {})
@example({1: {"a": 1}, "TASK2": {"b": 2}}, {})  # keys of mixed types
@example({}, {"lr": "nan"})  # read silently as a NaN learning rate
@example({}, {"lr": -1})
@example({}, {"max_seq_length": "1e400"})  # int(inf)
def test_tasks_yaml_loader(tmp_path, content, changes):
    from _taskdata_helpers import task_entry
    from vilbert.tasks.config import TaskConfigError, load_task_configs

    if isinstance(content, dict):
        content = {**content, "TASK9": {**task_entry(), **changes}}  # one entry near a valid one
        text = yaml.safe_dump(content)
    else:
        text = content
    path = tmp_path / "tasks.yml"
    try:
        path.write_text(text)
    except UnicodeEncodeError:
        return
    try:
        configs = load_task_configs(path)
    except TaskConfigError as exc:
        assert "\n" not in str(exc)
        return
    for config in configs.values():
        assert np.isfinite(config.lr) and config.lr > 0 and config.batch_size > 0 and config.max_seq_length > 0
