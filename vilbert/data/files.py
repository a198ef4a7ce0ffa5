"""Annotation files shared by the readers: JSON lines (plain or gzipped), with errors that name
the file and the line; paths from annotation files kept under their data root, and output paths
kept under --output_dir."""

from __future__ import annotations

import gzip
import json
from pathlib import Path, PurePosixPath, PureWindowsPath


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line of a .jsonl (or .jsonl.gz) file, each with its `_line` number."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                record["_line"] = line_no
                records.append(record)
    return records


def field_error(exc: Exception) -> str:
    """A reader's parse error in words: "missing field 'x'" for a KeyError, else its message."""
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or repr(exc)


def data_relative_path(value, where: str) -> PurePosixPath:
    """A path an annotation file gives (an image file, a metadata file), checked to stay under the
    data root it is read against: relative, and without '..'. A path that would leave the root is a
    ValueError naming `where`, so an annotation file can never point a reader at /etc or ~/.ssh."""
    text = str(value)
    path = PurePosixPath(text.replace("\\", "/"))
    if not text or path.is_absolute() or ".." in path.parts or PureWindowsPath(text).drive:
        raise ValueError(f"{where}: path {text[:80]!r} leaves the data root (absolute or '..'); give it "
                         "relative to the data root")
    return path


def output_path(output_dir, name: str, flag: str) -> Path:
    """`output_dir/name`, where `name` (built from flags or task names) must stay inside `output_dir`:
    one path component or more, relative, without '..'. Otherwise a ValueError naming `flag`."""
    path = PurePosixPath(str(name))
    if not str(name) or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{flag}: {str(name)[:80]!r} would write outside --output_dir {output_dir}")
    return Path(output_dir) / str(name)
