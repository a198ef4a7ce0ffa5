"""A restricted unpickler for the legacy pickle formats we must read (REFERENCE section 4, 7).

The originals pickle their LMDB records, their per-image `.npy` dicts and RefCOCO+'s `refs(unc).p`.
`pickle.load` on such a file runs whatever callable the file names, so a file from an untrusted source
can execute code. `safe_load` admits only what those formats contain: plain containers, numbers,
strings/bytes, OrderedDict/defaultdict, and numpy arrays, dtypes and scalars. Any other global in the
stream raises `UnsafePickleError` naming it, before anything is called.

    from vilbert.safe_pickle import safe_load
    refs = safe_load("refcoco+/refs(unc).p")      # a path, bytes, or a binary file object
"""

from __future__ import annotations

import collections
import io
import os
import pickle

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set; nothing from it was run."""


def _numpy_core(name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles name either, depending on who wrote them.
    import importlib

    for module in ("numpy._core." + name, "numpy.core." + name):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError(f"numpy has no {name} module")


def _allowed() -> dict[tuple[str, str], object]:
    import builtins

    plain = {
        name: getattr(builtins, name)
        for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                     "bytearray", "bool")
    }
    allowed = {("builtins", name): obj for name, obj in plain.items()}
    allowed.update({("__builtin__", name): obj for name, obj in plain.items()})  # Python 2 pickles
    allowed[("__builtin__", "unicode")] = str
    allowed[("__builtin__", "long")] = int
    import _codecs

    # Protocol 2 pickles written by Python 3 spell a bytes object as _codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = _codecs.encode
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("collections", "defaultdict")] = collections.defaultdict
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        if hasattr(numeric, "_frombuffer"):  # protocol 5 array pickles
            allowed[(module, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # numpy >= 1.25 pickles dtypes as e.g. numpy.dtypes.Float32DType
    for name in dir(getattr(np, "dtypes", object())):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self.source = source
        self.allowed = _allowed()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle {module}.{name} (only plain containers, numbers, "
                "strings/bytes and numpy arrays are allowed; nothing in the file was run)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent id in the pickle")


def safe_load(file_or_bytes, encoding: str = "latin1", source: str | None = None):
    """Unpickle a path, bytes-like object or binary file, admitting only plain data and numpy arrays.

    `encoding` decodes Python 2 `str` objects ("latin1" is what numpy needs for Python 2 arrays and
    what the refer toolkit's Python 2 pickles need). Raises UnsafePickleError for anything else, and
    pickle.UnpicklingError (naming `source`) for a damaged stream.
    """
    if isinstance(file_or_bytes, (bytes, bytearray, memoryview)):
        return _load(io.BytesIO(file_or_bytes), source or "pickle data", encoding)
    if isinstance(file_or_bytes, (str, os.PathLike)):
        with open(file_or_bytes, "rb") as handle:
            return _load(handle, source or str(file_or_bytes), encoding)
    return _load(file_or_bytes, source or getattr(file_or_bytes, "name", "pickle stream"), encoding)


def _load(handle, source: str, encoding: str):
    try:
        return _RestrictedUnpickler(handle, source, encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
