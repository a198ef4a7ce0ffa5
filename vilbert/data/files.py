"""Annotation files shared by the readers: JSON lines (plain or gzipped), with errors that name
the file and the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


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
