"""Seed-format records ({instruction, output}) straight to Arrow turns, without a dict per turn.

For large in-memory batches (the benchmark, bulk imports): the two fields become two Arrow
columns in one conversion each, with their types checked by Arrow. A record that does not
fit raises, naming its index and field; files go through `reader.py`, row by row.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from qlora_assets.data.prepare import Turns

_ROLES = pa.array(["user", "assistant"], pa.large_string())


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


def seed_records_to_turns(records: list[dict]) -> Turns:
    n = len(records)
    both = pa.concat_arrays([_column(records, "instruction"), _column(records, "output")])
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)  # user, assistant, user, ...
    return Turns(offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64), roles=_ROLES.take(np.tile([0, 1], n)),
                 contents=both.take(order))
