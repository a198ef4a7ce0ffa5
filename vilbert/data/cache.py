"""A cache for tokenised, padded text inputs, in a safe format.

The originals pickled whole dataset entries into `dataroot/cache/*.pkl` keyed only by split and
length, so an edited annotation file or another tokenizer silently reused stale inputs, and loading
a cache meant unpickling a file (REFERENCE 7). Here a cache file is a numpy `.npz` of integer
arrays, read with `allow_pickle=False`, and its name carries a hash of everything the arrays
depend on: the annotation files' contents, the tokenizer's vocabulary and casing, the maximum
length and the reader's own settings. A changed input gives a new key; nothing stale is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

logger = logging.getLogger(__name__)

_FILE_DIGESTS: dict[tuple, str] = {}
_TOKENIZER_DIGESTS: dict[int, str] = {}


def file_digest(path: Union[str, Path]) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime within this process)."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FILE_DIGESTS[memo_key] = digest.hexdigest()
    return _FILE_DIGESTS[memo_key]


def tokenizer_digest(tokenizer) -> str:
    """A hash of what decides a tokenizer's output: its class, vocabulary and casing."""
    if id(tokenizer) not in _TOKENIZER_DIGESTS:
        vocab = sorted(tokenizer.get_vocab().items())
        lower = getattr(tokenizer, "do_lower_case", None)
        normalizer = None
        if getattr(tokenizer, "backend_tokenizer", None) is not None and tokenizer.backend_tokenizer.normalizer:
            # A fast tokenizer applies casing and accent stripping in its normaliser.
            normalizer = tokenizer.backend_tokenizer.normalizer.__getstate__().decode()
        text = json.dumps([type(tokenizer).__name__, lower, normalizer, vocab], ensure_ascii=False)
        _TOKENIZER_DIGESTS[id(tokenizer)] = hashlib.sha256(text.encode()).hexdigest()
    return _TOKENIZER_DIGESTS[id(tokenizer)]


def cache_key(files: Iterable[Union[str, Path]], tokenizer, max_length: int, **settings) -> str:
    """The hash naming a cache file: annotation contents + tokenizer + length + reader settings."""
    parts = {
        "files": [file_digest(f) for f in files],
        "tokenizer": tokenizer_digest(tokenizer),
        "max_length": int(max_length),
        "settings": {k: settings[k] for k in sorted(settings)},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_arrays(
    cache_dir: Optional[Union[str, Path]],
    prefix: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Load `<cache_dir>/<prefix>_<key>.npz`, or call `build()` and save its arrays there.

    The write goes to a temporary file renamed into place, so processes that race to build the
    same cache (one per rank) never see a partial file. A cache folder that cannot be written is
    not an error: the arrays are just rebuilt next time.
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{prefix}_{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache %s (%s); rebuilding it", path, exc)
    arrays = build()
    for name, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"cache {prefix}: array {name!r} has dtype object; only numeric arrays are cached")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write cache %s (%s); continuing without it", path, exc)
    return arrays
