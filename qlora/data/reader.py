"""Read every row of a domain's files, recording where it came from; never stop on a bad row.

A JSONL file is decoded line by line (strict UTF-8), so one bad line costs one row.
A JSON array is walked element by element with `raw_decode`, so each element keeps its
line number; a syntax error quarantines the rest of that file as one entry at that line.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qlora.data.formats import RowError, normalise, row_licence

DATA_SUFFIXES = (".jsonl", ".json")
RAW_COLUMNS = ["source_file", "line", "format", "licence", "messages_json"]
QUARANTINE_COLUMNS = ["source_file", "line", "reason", "detail", "excerpt"]
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


@dataclass
class ReadResult:
    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    rows_in: dict[str, int] = field(default_factory=dict)  # per file: records met (lines / elements)

    def rows_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=RAW_COLUMNS).astype({"line": "int64"})

    def quarantine_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.quarantine, columns=QUARANTINE_COLUMNS).astype({"line": "int64"})


def _excerpt(text: str | bytes, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text[:limit]


def _sidecar_licence(path: Path) -> str | None:
    sidecar = path.with_name(path.name + ".license")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip() or None
    return None


def _accept(result: ReadResult, name: str, line: int, value, file_licence, raw) -> None:
    try:
        fmt, messages = normalise(value)
    except RowError as err:
        result.quarantine.append(
            {"source_file": name, "line": line, "reason": err.reason, "detail": err.detail, "excerpt": _excerpt(raw)}
        )
        return
    result.rows.append(
        {
            "source_file": name,
            "line": line,
            "format": fmt,
            "licence": row_licence(value, file_licence),
            "messages_json": json.dumps(messages, ensure_ascii=False),
        }
    )


def _read_jsonl(path: Path, name: str, result: ReadResult, licence: str | None) -> None:
    met = 0
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        met += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            result.quarantine.append(
                {"source_file": name, "line": number, "reason": "bad_encoding",
                 "detail": f"not UTF-8 at byte {err.start}", "excerpt": _excerpt(raw)}
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            result.quarantine.append(
                {"source_file": name, "line": number, "reason": "malformed_json",
                 "detail": f"{err.msg} at column {err.colno}", "excerpt": _excerpt(text)}
            )
            continue
        _accept(result, name, number, value, licence, text)
    result.rows_in[name] = met


def _read_json_array(path: Path, name: str, result: ReadResult, licence: str | None) -> None:
    met = 0

    def fail(reason: str, detail: str, line: int, excerpt) -> None:
        nonlocal met
        met += 1
        result.quarantine.append(
            {"source_file": name, "line": line, "reason": reason, "detail": detail, "excerpt": _excerpt(excerpt)}
        )

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        fail("bad_encoding", f"not UTF-8 at byte {err.start} (whole file)", 1, b"")
        result.rows_in[name] = met
        return
    seen_pos, seen_lines = 0, 1  # line counting is incremental: big arrays stay linear

    def line_of(p: int) -> int:
        nonlocal seen_pos, seen_lines
        seen_lines += text.count("\n", seen_pos, p)
        seen_pos = p
        return seen_lines

    def skip(p: int) -> int:
        return _SPACE.match(text, p).end()

    pos = skip(0)
    if not text.startswith("[", pos):
        # Not an array: a single object counts as one row.
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            fail("malformed_json", f"{err.msg}", err.lineno, text[:200])
        else:
            met += 1
            _accept(result, name, 1, value, licence, text)
        result.rows_in[name] = met
        return
    pos += 1
    while True:
        pos = skip(pos)
        line_at = line_of(pos)
        if text.startswith("]", pos):
            break
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            fail("malformed_json", f"{err.msg}; rest of file not read", line_at, text[pos:pos + 200])
            break
        met += 1
        _accept(result, name, line_at, value, licence, text[pos:end])
        pos = skip(end)
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            fail("malformed_json", "expected ',' or ']'; rest of file not read", line_of(pos), text[pos:pos + 200])
            break
    result.rows_in[name] = met


def data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))


def read_file(path: Path, result: ReadResult | None = None, name: str | None = None) -> ReadResult:
    result = result or ReadResult()
    name = name or path.name
    licence = _sidecar_licence(path)
    if path.suffix == ".jsonl":
        _read_jsonl(path, name, result, licence)
    else:
        _read_json_array(path, name, result, licence)
    return result


def read_domain(folder: Path) -> ReadResult:
    """Every row of every .json/.jsonl file under `folder` (names relative to it)."""
    result = ReadResult()
    for path in data_files(folder):
        read_file(path, result, str(path.relative_to(folder)))
    return result


def count_records(path: Path) -> int | None:
    """Records in a file counted without the reader (for the 'rows in = rows read' check):
    non-blank lines of JSONL, elements of a JSON array; None if the file cannot be parsed whole."""
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        return sum(1 for line in data.split(b"\n") if line.strip())
    try:
        value = json.loads(data.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return None
    return len(value) if isinstance(value, list) else 1


def count_domain(folder: Path) -> dict[str, int | None]:
    return {str(p.relative_to(folder)): count_records(p) for p in data_files(folder)}
