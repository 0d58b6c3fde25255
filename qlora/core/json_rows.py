"""Row-level reading of JSON and JSONL, bounded: the engine behind `qlora.core.io`.

- a JSONL line longer than ``max_row_bytes`` is measured while streaming and skipped, never held
  whole (only its first ``HEAD_BYTES`` are kept, for an excerpt); in a JSON array an element over
  the limit is refused after the C decoder has measured it (the file is in memory anyway, and
  capped at ``MAX_FILE_BYTES``);
- nesting deeper than ``max_depth`` is refused by a linear scan (no parsing, no recursion), so a
  row nested 10,000 deep is an error for that row, not a RecursionError;
- a UTF-8 byte-order mark at the start of a file is dropped (it costs no row); a UTF-16 file and
  invalid UTF-8 are reported per line.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

MAX_DEPTH = 64  # chat rows nest 3 deep; manifests and state files under 10
MAX_ROW_BYTES = 1 << 20  # 1 MiB: ~40x a row at the default token bounds (6,144 tokens)
MAX_FILE_BYTES = 256 << 20  # whole-file JSON (arrays, manifests); big data belongs in JSONL
HEAD_BYTES = 4096  # what is kept of an oversized row, for an excerpt
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = re.compile(r"\s*")
# JSON's lexical structure as far as nesting goes: strings (skipped whole, escapes included;
# an unterminated one runs to the end, so the scan stays linear) and the four brackets.
_STRUCTURE = re.compile(r'(?s)"(?:[^"\\]|\\.)*+(?:"|\Z)|[\[\]{},]')
_DECODER = json.JSONDecoder()
Layout = Literal["auto", "jsonl", "json"]


class JsonInputError(ValueError):
    """A file (or one row of it) that cannot be used; the message starts with ``file:line:``."""

    def __init__(self, path: str | Path, line: int, reason: str, detail: str):
        super().__init__(f"{path}:{line}: {detail}")
        self.path, self.line, self.reason, self.detail = str(path), line, reason, detail


@dataclass(frozen=True)
class Record:
    """One row: its 1-based line, the parsed value (when ``error`` is None) and its text.

    ``text`` is the row as decoded (for an oversized or undecodable row, its head with
    replacement characters), for excerpts; callers that store it must mask it."""

    line: int
    value: Any = None
    text: str = ""
    error: JsonInputError | None = None


def too_deep(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """True if brackets outside strings nest deeper than ``max_depth`` (no parsing, no recursion)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif token in "]}":
            depth -= 1
    return False


def parse(text: str, where: str | Path, line: int = 1, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with the depth limit; errors name ``where`` and the line."""
    if too_deep(text, max_depth):
        raise JsonInputError(where, line, "too_deep", f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonInputError(where, line + err.lineno - 1, "malformed_json",
                             f"not valid JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:  # belt and braces: the scan above should have refused it
        raise JsonInputError(where, line, "too_deep", f"nested deeper than {max_depth} levels") from None


def _stream_lines(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """(line number, content, length in bytes) per line; a line over ``max_bytes`` is read in
    pieces and only its head is kept, so memory stays bounded whatever the file holds."""
    number = 0
    while chunk := handle.readline(max_bytes + 1):
        number += 1
        if chunk.endswith(b"\n") or len(chunk) <= max_bytes:
            yield number, chunk.rstrip(b"\n"), len(chunk.rstrip(b"\n"))
            continue
        head, length = chunk[:HEAD_BYTES], len(chunk)
        while piece := handle.readline(1 << 20):
            if piece.endswith(b"\n"):
                length += len(piece) - 1
                break
            length += len(piece)
        yield number, head, length


def iter_lines(path: str | Path, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """Non-blank lines of a file as (line, content or head, length); a leading UTF-8 BOM dropped."""
    with open(path, "rb") as handle:
        for number, content, length in _stream_lines(handle, max_row_bytes):
            if number == 1 and content.startswith(UTF8_BOM):
                content, length = content[len(UTF8_BOM):], length - len(UTF8_BOM)
            if length <= max_row_bytes and not content.strip():
                continue
            yield number, content, length


def _jsonl_records(path: Path, max_row_bytes: int, max_depth: int) -> Iterator[Record]:
    with open(path, "rb") as handle:
        utf16 = handle.read(2) in UTF16_BOMS
    for number, content, length in iter_lines(path, max_row_bytes):
        if utf16:  # no excerpt: UTF-16 read as bytes would hide its text (and any PII) from masking
            yield Record(number, error=JsonInputError(
                path, number, "bad_encoding", "the file is UTF-16 (byte-order mark at its start): save it as UTF-8"))
            continue
        if length > max_row_bytes:
            yield Record(number, text=content.decode("utf-8", errors="replace"), error=JsonInputError(
                path, number, "row_too_large", f"row is {length:,} bytes, over the limit of {max_row_bytes:,}"))
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as err:
            yield Record(number, text=content.decode("utf-8", errors="replace"), error=JsonInputError(
                path, number, "bad_encoding", f"not UTF-8 at byte {err.start}"))
            continue
        try:
            yield Record(number, parse(text, path, number, max_depth), text)
        except JsonInputError as err:
            yield Record(number, text=text, error=err)


def _element_end(text: str, pos: int) -> int:
    """Where the array element starting at ``pos`` ends (its ',' or ']'); len(text) when the
    array is never closed. A scan, not a parse: for elements too deep for the decoder."""
    depth = 0
    for match in _STRUCTURE.finditer(text, pos):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            if depth == 0:
                return match.start()
            depth -= 1
        elif token == "," and depth == 0:
            return match.start()
    return len(text)


def _too_large(text: str, start: int, end: int, limit: int) -> int:
    """The element's size in UTF-8 bytes if over ``limit``, else 0 (encodes only when it could be)."""
    chars = end - start
    if chars * 4 <= limit:
        return 0
    size = chars if chars > limit else len(text[start:end].encode("utf-8", errors="replace"))
    return size if size > limit else 0


def _json_records(path: Path, max_row_bytes: int, max_depth: int) -> Iterator[Record]:
    """Elements of a top-level array, each with the line it starts on (a single value is one record).
    A syntax error ends the file: one error record at its line, for the rest of the file."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        yield Record(1, error=JsonInputError(path, 1, "file_too_large",
                                             f"file is {size:,} bytes, over {MAX_FILE_BYTES:,}: write big data as JSONL"))
        return
    raw = path.read_bytes()
    if raw.startswith(UTF16_BOMS):
        yield Record(1, error=JsonInputError(path, 1, "bad_encoding", "the file is UTF-16 (byte-order mark at its start): save it as UTF-8"))
        return
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        yield Record(line, text=raw[err.start:err.start + 200].decode("utf-8", errors="replace"),
                     error=JsonInputError(path, line, "bad_encoding", f"not UTF-8 at byte {err.start} (rest of file not read)"))
        return
    seen_pos, seen_line = 0, 1  # line counting is incremental: big arrays stay linear

    def line_of(p: int) -> int:
        nonlocal seen_pos, seen_line
        seen_line += text.count("\n", seen_pos, p)
        seen_pos = p
        return seen_line

    pos = _WHITESPACE.match(text).end()
    if not text.startswith("[", pos):
        if len(raw) > max_row_bytes:
            yield Record(1, text=text[:HEAD_BYTES], error=JsonInputError(
                path, 1, "row_too_large", f"row is {len(raw):,} bytes, over the limit of {max_row_bytes:,}"))
            return
        try:
            yield Record(line_of(pos), parse(text, path, 1, max_depth), text)
        except JsonInputError as err:
            yield Record(err.line, text=text[:HEAD_BYTES], error=err)
        return
    pos += 1
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        line = line_of(pos)
        if text.startswith("]", pos):
            return
        try:  # the C decoder first; the depth scan only for a row it cannot take
            value, stop = _DECODER.raw_decode(text, pos)
        except RecursionError:
            stop = _element_end(text, pos)
            yield Record(line, text=text[pos:pos + HEAD_BYTES], error=JsonInputError(
                path, line, "too_deep", f"nested deeper than {max_depth} levels"))
        except json.JSONDecodeError as err:
            yield Record(err.lineno, text=text[pos:pos + HEAD_BYTES], error=JsonInputError(
                path, err.lineno, "malformed_json", f"not valid JSON: {err.msg}; rest of file not read"))
            return
        else:
            if size := _too_large(text, pos, stop, max_row_bytes):
                yield Record(line, text=text[pos:pos + HEAD_BYTES], error=JsonInputError(
                    path, line, "row_too_large", f"row is {size:,} bytes, over the limit of {max_row_bytes:,}"))
            elif too_deep(element := text[pos:stop], max_depth):
                yield Record(line, text=element[:HEAD_BYTES], error=JsonInputError(
                    path, line, "too_deep", f"nested deeper than {max_depth} levels"))
            else:
                yield Record(line, value, element)
        pos = _WHITESPACE.match(text, stop).end()
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            at = line_of(pos)
            yield Record(at, text=text[pos:pos + HEAD_BYTES], error=JsonInputError(
                path, at, "malformed_json", "expected ',' or ']'; rest of file not read"))
            return


def _layout(path: Path, layout: Layout) -> Layout:
    if layout != "auto":
        return layout
    with open(path, "rb") as handle:
        start = handle.read(4096).removeprefix(UTF8_BOM).lstrip()
    return "json" if start.startswith(b"[") or path.suffix == ".json" else "jsonl"


def iter_records(path: str | Path, layout: Layout = "auto", max_row_bytes: int = MAX_ROW_BYTES,
                 max_depth: int = MAX_DEPTH) -> Iterator[Record]:
    """Every record of a JSONL file (one per non-blank line) or a JSON file (array elements, or
    one value). ``auto``: a file starting with '[' is an array, else a ``.json`` file is one value,
    else JSONL. Row problems are yielded as records with an error, never raised; an unreadable
    file raises OSError."""
    path = Path(path)
    if _layout(path, layout) == "jsonl":
        yield from _jsonl_records(path, max_row_bytes, max_depth)
    else:
        yield from _json_records(path, max_row_bytes, max_depth)
