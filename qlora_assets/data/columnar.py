"""Seed-format records ({instruction, output}) straight to Arrow turns, without a dict per turn.

For large in-memory batches (the benchmark, bulk imports). The texts are UTF-8 encoded by
`str.encode` and appended to one buffer that becomes the Arrow data buffer as it is: about
3x faster than `pa.array` on Korean text (which also leaves a UTF-8 copy cached in every
`str`), and no interleaving copy, as the turns are read in order. A record that does not
fit raises, naming its index and field; files go through `reader.py`, row by row.
"""
from __future__ import annotations

from itertools import chain
from operator import itemgetter

import numpy as np
import pyarrow as pa

from qlora_assets.data.prepare import Turns

_ROLES = pa.array(["user", "assistant"], pa.large_string())
_CHUNK = 65_536  # strings encoded at a time: bounds the transient bytes objects


def _column(records: list[dict], field: str) -> pa.Array:
    values = [r.get(field) for r in records]
    try:
        column = pa.array(values, pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        bad = next(i for i, v in enumerate(values) if v is not None and not isinstance(v, str))
        raise ValueError(f"record {bad}: field '{field}' must be a string, got {type(values[bad]).__name__}") from None
    if column.null_count:
        bad = next(i for i, v in enumerate(values) if v is None)
        raise ValueError(f"record {bad}: field '{field}' is missing")
    return column


def utf8_array(texts: list[str]) -> pa.Array:
    """large_string array of `texts` (all `str`; TypeError otherwise)."""
    data = bytearray()  # grows in place (realloc), so the text is held about once
    lengths = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), _CHUNK):
        encoded = list(map(str.encode, texts[start:start + _CHUNK]))
        lengths[start:start + len(encoded)] = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        data += b"".join(encoded)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(offsets), pa.py_buffer(data))


def seed_records_to_turns(records: list[dict]) -> Turns:
    n = len(records)
    try:
        texts = list(chain.from_iterable(map(itemgetter("instruction", "output"), records)))  # user, assistant, ...
        contents = utf8_array(texts)
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
        for field in ("instruction", "output"):  # the slow path names the record and field
            _column(records, field)
        raise
    return Turns(offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64), roles=_ROLES.take(np.tile([0, 1], n)),
                 contents=contents)
