"""Seed-format records ({instruction, output}) straight to Arrow turns, without a dict per turn.

For large batches (the benchmark, bulk imports), in memory or from a JSONL file, a chunk of
rows at a time so that `prepare.prepare_chunks` works on one chunk while the next is made.
In memory, a chunk's texts are joined and UTF-8 encoded by one `str.encode` (`utf8_array`):
several times faster than `pa.array` on Korean text (which also leaves a UTF-8 copy cached in
every `str`); this encoding holds the GIL, and bounds the in-memory path. From a file,
pyarrow's JSON reader parses straight into Arrow, in its own threads. A record that does not
fit raises, naming its index and field; files that need a quarantine for bad lines go through
`reader.py`, row by row.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from qlora.data.prepare import ROWS_PER_CHUNK, Turns

_ROLES = pa.array(["user", "assistant"], pa.large_string())


def _check_field(records: list[dict], field: str, first: int) -> None:
    """Raise naming the first record (counted from `first`) whose `field` is missing or not a string."""
    for index, record in enumerate(records, start=first):
        value = record.get(field) if isinstance(record, dict) else None
        if value is None:
            raise ValueError(f"record {index}: field '{field}' is missing")
        if not isinstance(value, str):
            raise ValueError(f"record {index}: field '{field}' must be a string, got {type(value).__name__}")


def _utf8_array_one_by_one(texts: list[str]) -> pa.Array:
    encoded = list(map(str.encode, texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def utf8_array(texts: list[str]) -> pa.Array:
    """large_string array of `texts` (all `str`; TypeError otherwise).

    One `"\x00".join(...).encode()` for all of them (~1.7x faster than a `str.encode` each);
    the NULs then give the boundaries, and one `take` (a memcpy, GIL released) drops them.
    Texts holding a NUL themselves are encoded one by one."""
    if not texts:
        return pa.array([], pa.large_string())
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        return _utf8_array_one_by_one(texts)
    data = joined.encode()
    del joined
    separators = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0)
    bounds = np.empty(2 * len(texts), dtype=np.int64)  # text 0, NUL, text 1, NUL, ..., text n-1
    bounds[0], bounds[-1] = 0, len(data)
    bounds[1:-1:2], bounds[2:-1:2] = separators, separators + 1
    with_nuls = pa.LargeStringArray.from_buffers(2 * len(texts) - 1, pa.py_buffer(bounds), pa.py_buffer(data))
    return with_nuls.take(pa.array(np.arange(0, 2 * len(texts), 2, dtype=np.int64)))


def _seed_turns(contents: pa.Array) -> Turns:
    """Turns of seed rows from their texts in row order (instruction, output, instruction, ...)."""
    n = len(contents) // 2
    return Turns(offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64), roles=_ROLES.take(np.tile([0, 1], n)),
                 contents=contents)


def seed_records_to_turns(records: list[dict], first: int = 0) -> Turns:
    """`first`: the index of records[0] in the whole input, for error messages."""
    try:
        texts = list(chain.from_iterable(map(itemgetter("instruction", "output"), records)))  # user, assistant, ...
        contents = utf8_array(texts)
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
        for field in ("instruction", "output"):  # the slow path names the record and field
            _check_field(records, field, first)
        raise
    return _seed_turns(contents)


def seed_record_chunks(records: list[dict], rows: int = ROWS_PER_CHUNK) -> Iterator[Turns]:
    """seed_records_to_turns of `rows` records at a time."""
    for start in range(0, len(records), rows):
        yield seed_records_to_turns(records[start:start + rows], first=start)


def seed_batch_to_turns(batch: pa.RecordBatch, first_line: int = 1) -> Turns:
    """Turns of a batch with string columns instruction and output (interleaved: a copy of the text)."""
    columns = []
    for field in ("instruction", "output"):
        if field not in batch.schema.names:
            raise ValueError(f"line {first_line}: field '{field}' is missing")
        column = batch.column(field)
        if column.null_count:
            bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"line {first_line + bad}: field '{field}' is missing or null")
        columns.append(column.cast(pa.large_string()))
    n = batch.num_rows
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)
    return _seed_turns(pa.concat_arrays(columns).take(pa.array(order)))


def read_seed_jsonl(path: Path, block_bytes: int = 4 << 20) -> Iterator[tuple[pa.RecordBatch, Turns]]:
    """(the batch's other columns, its turns) per block of a JSONL file of seed rows, in file order.

    Blank lines are skipped by the parser, so line numbers in errors count non-blank lines."""
    schema = pa.schema([("instruction", pa.string()), ("output", pa.string())])
    reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=block_bytes),
                          parse_options=pj.ParseOptions(explicit_schema=schema))
    line = 1
    for batch in reader:
        yield batch.drop_columns(["instruction", "output"]), seed_batch_to_turns(batch, line)
        line += batch.num_rows
