"""Read every row of a domain's files, recording where it came from; never stop on a bad row.

Rows come from the bounded reader (`qlora.core.io.iter_records`): a JSONL file line by line, a
JSON array element by element, each with its line. A row over the size limit, nested too deep,
not UTF-8 or not JSON is quarantined at its line with that reason and the file goes on (a JSON
array's syntax error ends that file: the rest is one entry at its line).

The warehouse never holds raw PII: turns, licences, details and excerpts are masked here
(`pii.mask_pii`), and the spans masked are counted per row. Only regular files inside the domain
folder are opened: a symbolic link is quarantined (line 0, `symlink_not_followed`) unread, so
nothing outside the data root is ever read. Hidden names (a leading '.') are skipped, as the
training-data sensor skips them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qlora.core.io import HEAD_BYTES, MAX_DEPTH, MAX_FILE_BYTES, MAX_ROW_BYTES, Record, iter_lines, iter_records
from qlora.core.paths import check_domain_name
from qlora.data.formats import RowError, normalise, row_licence
from qlora.data.pii import mask_pii

DATA_SUFFIXES = (".jsonl", ".json")
RAW_COLUMNS = ["source_file", "line", "format", "licence", "messages_json", "pii_spans_masked"]
QUARANTINE_COLUMNS = ["source_file", "line", "reason", "detail", "excerpt"]
SYMLINK = "symlink_not_followed"
_TAIL = (re.compile(r"\S+$"), re.compile(r"[\d().+\- ]+$"))


@dataclass
class ReadResult:
    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    rows_in: dict[str, int] = field(default_factory=dict)  # per file: records met (lines / elements)

    def rows_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=RAW_COLUMNS).astype({"line": "int64", "pii_spans_masked": "int64"})

    def quarantine_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.quarantine, columns=QUARANTINE_COLUMNS).astype({"line": "int64"})


def excerpt(text: str, whole: bool = True, limit: int = 200) -> str:
    """The first ``limit`` characters of the PII-masked text. Masking runs before the cut, so a
    cut never splits an address or number the masker would have caught; where the text itself
    was only a head (``whole=False``) or is cut, the last partial token is dropped as well."""
    masked = mask_pii(text)[0]
    if whole and len(masked) <= limit:
        return masked
    shown = masked[:limit]
    for tail in _TAIL:
        shown = tail.sub("", shown)
    return shown


def walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """(data files, symbolic links) under ``folder``, sorted; links are listed, never followed."""
    files, links = [], []
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                if entry.is_symlink():
                    links.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False) and entry.name.endswith(DATA_SUFFIXES):
                    files.append(path)
    return sorted(files), sorted(links)


def data_files(folder: Path) -> list[Path]:
    return walk(folder)[0]


def _sidecar_licence(path: Path) -> str | None:
    sidecar = path.with_name(path.name + ".license")
    if sidecar.is_symlink() or not sidecar.is_file():
        return None
    with sidecar.open("rb") as handle:
        text = handle.read(256).decode("utf-8", errors="replace").strip()
    return mask_pii(text)[0] or None


def _quarantine(result: ReadResult, name: str, line: int, reason: str, detail: str, text: str, whole: bool = True) -> None:
    result.quarantine.append({"source_file": name, "line": line, "reason": reason,
                              "detail": mask_pii(detail)[0], "excerpt": excerpt(text, whole)})


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _accept(result: ReadResult, name: str, record: Record, file_licence: str | None) -> None:
    if record.error is not None:
        whole = record.error.reason != "row_too_large" and len(record.text) < HEAD_BYTES
        _quarantine(result, name, record.line, record.error.reason, record.error.detail, record.text, whole)
        return
    try:
        fmt, messages = normalise(record.value)
    except RowError as err:
        _quarantine(result, name, record.line, err.reason, err.detail, record.text)
        return
    licence = row_licence(record.value, file_licence)
    if not all(_encodable(m["content"]) for m in messages) or not _encodable(licence):
        _quarantine(result, name, record.line, "bad_encoding",
                    "a string holds an unpaired surrogate escape (e.g. \\ud800): not representable in UTF-8", record.text)
        return
    spans, masked = 0, []
    for message in messages:
        content, n = mask_pii(message["content"])
        spans += n
        masked.append({"role": message["role"], "content": content})
    result.rows.append({
        "source_file": name,
        "line": record.line,
        "format": fmt,
        "licence": mask_pii(licence)[0],
        "messages_json": json.dumps(masked, ensure_ascii=False),
        "pii_spans_masked": spans,
    })


def read_file(path: Path, result: ReadResult | None = None, name: str | None = None,
              max_row_bytes: int = MAX_ROW_BYTES, max_depth: int = MAX_DEPTH) -> ReadResult:
    result = result or ReadResult()
    name = name or path.name
    met = 0
    try:
        licence = _sidecar_licence(path)
        for record in iter_records(path, "jsonl" if path.suffix == ".jsonl" else "json", max_row_bytes, max_depth):
            met += 1
            _accept(result, name, record, licence)
    except OSError as err:  # unreadable (permissions, vanished): one entry for the rest of the file
        met += 1
        _quarantine(result, name, 0, "unreadable", f"cannot read the file: {err.strerror or err}", "")
    result.rows_in[name] = met
    return result


def read_domain(folder: Path, domain: str | None = None) -> ReadResult:
    """Every row of every .json/.jsonl file under `folder` (names relative to it). A `domain`
    given must be a valid domain name (the rule `discover_domains` applies to folders)."""
    if domain is not None:
        check_domain_name(domain, folder)
    files, links = walk(folder)
    result = ReadResult()
    for link in links:
        _quarantine(result, str(link.relative_to(folder)), 0, SYMLINK,
                    "a symbolic link; links are never followed (copy the data into the domain folder)", "")
    for path in files:
        read_file(path, result, str(path.relative_to(folder)))
    return result


def count_records(path: Path) -> int | None:
    """Records in a file counted without the reader (for the 'rows in = rows read' check):
    non-blank lines of JSONL, elements of a JSON array; None if the file cannot be parsed whole."""
    try:
        if path.suffix == ".jsonl":
            return sum(1 for _ in iter_lines(path))
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        value = json.loads(path.read_bytes().decode("utf-8-sig", errors="replace"))
    except (OSError, json.JSONDecodeError, RecursionError):
        return None
    return len(value) if isinstance(value, list) else 1


def count_domain(folder: Path) -> dict[str, int | None]:
    return {str(p.relative_to(folder)): count_records(p) for p in data_files(folder)}
