"""JSON and JSONL files: one bounded reader whose errors name file and line, and atomic writes.

``iter_records`` (in `json_rows`, re-exported here) yields every record of a file with its line
and either a value or a `JsonInputError`, for readers that quarantine and go on; ``read_records``
and ``read_json`` raise the first error, for files that must be whole (eval sets, training rows,
manifests, state files). Limits: ``MAX_ROW_BYTES`` per row, ``MAX_DEPTH`` of nesting,
``MAX_FILE_BYTES`` for a whole-file JSON.

Writes go to a temp file in the same folder, are fsynced, then ``os.replace``d over the target:
a crash leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from qlora.core.json_rows import (  # noqa: F401  (the reading API, re-exported)
    HEAD_BYTES, MAX_DEPTH, MAX_FILE_BYTES, MAX_ROW_BYTES, UTF8_BOM, JsonInputError, Layout, Record, iter_lines,
    iter_records, parse, too_deep,
)


def read_records(path: str | Path, layout: Layout = "auto", max_row_bytes: int = MAX_ROW_BYTES,
                 max_depth: int = MAX_DEPTH) -> list[tuple[int, Any]]:
    """(line, value) of every record; the first bad one raises `JsonInputError` (file:line)."""
    rows = []
    for record in iter_records(path, layout, max_row_bytes, max_depth):
        if record.error is not None:
            raise record.error
        rows.append((record.line, record.value))
    return rows


def read_json(path: str | Path, what: str = "file", expect: type | None = dict,
              max_depth: int = MAX_DEPTH) -> Any:
    """One whole-file JSON value (a manifest, a state file); errors name the file, line and what it is.

    A missing file raises FileNotFoundError; use ``path.is_file()`` first where absence is normal."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise JsonInputError(path, 1, "file_too_large", f"{what} is {size:,} bytes, over {MAX_FILE_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise JsonInputError(path, 1, "bad_encoding", f"{what} is not UTF-8 (byte {err.start})") from None
    if not text.strip():
        raise JsonInputError(path, 1, "malformed_json", f"{what} is empty")
    try:
        value = parse(text, path, 1, max_depth)
    except JsonInputError as err:
        raise JsonInputError(path, err.line, err.reason, f"{what}: {err.detail}") from None
    if expect is not None and not isinstance(value, expect):
        raise JsonInputError(path, 1, "wrong_type", f"{what} must be a JSON {_KIND.get(expect, expect.__name__)}, "
                                                    f"got {type(value).__name__}")
    return value


_KIND = {dict: "object", list: "array"}


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename).

    ``mode``: the file's permissions from its creation (0o600 for a file holding a key); by
    default those of the file replaced, else 0o644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: str | Path, payload: Any, mode: int | None = None, indent: int | None = 2,
                      sort_keys: bool = False) -> Path:
    text = json.dumps(payload, ensure_ascii=False, indent=indent, sort_keys=sort_keys)
    return write_text_atomic(path, text + "\n", mode)
