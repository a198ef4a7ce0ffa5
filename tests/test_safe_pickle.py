"""vilbert.safe_pickle: plain data and numpy arrays load; any other global is refused unrun."""

import collections
import os
import pickle

import numpy as np
import pytest

from vilbert.safe_pickle import UnsafePickleError, safe_load


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_numpy_round_trip(protocol, tmp_path):
    data = {
        "array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ints": np.array([1, 2], dtype=np.int64),
        "scalar": np.float16(2.5),
        "dtype": np.dtype("<f2"),
        "plain": [1, 2.5, "x", b"bytes", (1, None, True), {3}, frozenset({4}), 3 + 1j, bytearray(b"ab")],
        "ordered": collections.OrderedDict(a=1),
        "default": collections.defaultdict(list, {"k": [1]}),
    }
    blob = pickle.dumps(data, protocol=protocol)
    (tmp_path / "d.p").write_bytes(blob)
    for source in (blob, tmp_path / "d.p", str(tmp_path / "d.p"), open(tmp_path / "d.p", "rb")):
        got = safe_load(source)
        np.testing.assert_array_equal(got["array"], data["array"])
        assert got["array"].dtype == np.float32 and got["scalar"] == np.float16(2.5)
        assert got["plain"] == data["plain"] and got["ordered"] == data["ordered"] and got["default"]["k"] == [1]


def test_reduce_payload_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps({"features": np.zeros(3), "evil": _Payload(str(marker))})
    with pytest.raises(UnsafePickleError, match=r"posix\.mkdir|os\.mkdir"):
        safe_load(blob)
    assert not marker.exists()
    # eval/getattr from builtins are not plain data either
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_load(b"cbuiltins\neval\n(S'1+1'\ntR.")


def test_damaged_stream_names_its_source(tmp_path):
    (tmp_path / "bad.p").write_bytes(pickle.dumps([1, 2, 3])[:-3])
    with pytest.raises(pickle.UnpicklingError, match="bad.p"):
        safe_load(tmp_path / "bad.p")
