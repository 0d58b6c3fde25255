"""The hot loop of cleaning: validate, mask PII, hash the masked normalised text.

One pass per row, split over worker processes for large inputs (fork: the rows are
inherited, not pickled; workers send back only status codes, digests and the few
rows whose text changed). Dedup itself is vectorised over the digests afterwards.
"""
from __future__ import annotations

import gc
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xxhash

from qlora_assets.data.pii import mask_pii
from qlora_assets.data.textkeys import conversation_key

_DIGITS = b"0123456789"

OK, EMPTY_TURN, TOO_SHORT = 0, 1, 2
STATUS_REASONS = {EMPTY_TURN: "empty_turn", TOO_SHORT: "too_short"}
PARALLEL_MIN_ROWS = 50_000  # below this, forking costs more than it saves


@dataclass
class Prepared:
    status: np.ndarray  # int8 per row (OK / EMPTY_TURN / TOO_SHORT)
    pii_spans: np.ndarray  # int32 per row: spans masked
    digests: np.ndarray  # (n, 2) uint64: xxh3-128 of the masked, normalised conversation
    masked: dict[int, list[dict]]  # row index -> masked messages (only rows that changed)

    def digests_hex(self, index: int) -> str:
        return self.digests[index].tobytes().hex()

    def messages(self, conversations: list[list[dict]], index: int) -> list[dict]:
        return self.masked.get(index, conversations[index])


def _prepare_slice(conversations, start: int, stop: int, min_instruction: int, min_output: int):
    n = stop - start
    status = np.zeros(n, dtype=np.int8)
    spans = np.zeros(n, dtype=np.int32)
    digests = bytearray(16 * n)
    masked: dict[int, list[dict]] = {}
    for offset in range(n):
        messages = conversations[start + offset]
        output = messages[-1]["content"].strip()
        instruction_len = sum(len(m["content"].strip()) for m in messages[:-1])
        if not output or any(not m["content"].strip() for m in messages):
            status[offset] = EMPTY_TURN
        elif instruction_len < min_instruction or len(output) < min_output:
            status[offset] = TOO_SHORT
        encoded = conversation_key(messages)
        # Cheap byte-level prefilter: only rows with an '@' or a digit can hold PII.
        if b"@" in encoded or len(encoded.translate(None, _DIGITS)) != len(encoded):
            changed = None
            for i, message in enumerate(messages):
                text, count = mask_pii(message["content"])
                if count:
                    spans[offset] += count
                    changed = changed or [dict(m) for m in messages]
                    changed[i]["content"] = text
            if changed is not None:
                masked[start + offset] = changed
                encoded = conversation_key(changed)
        digests[16 * offset:16 * offset + 16] = xxhash.xxh3_128_digest(encoded)
    return status, spans, bytes(digests), masked


_JOB: tuple | None = None  # set before fork; workers read it instead of unpickling rows


def _run_job(bounds: tuple[int, int]):
    conversations, min_instruction, min_output = _JOB
    return _prepare_slice(conversations, bounds[0], bounds[1], min_instruction, min_output)


def prepare_rows(conversations: list[list[dict]], min_chars: dict, workers: int = 1) -> Prepared:
    """Validate, mask and hash every conversation (each a non-empty list of messages)."""
    global _JOB
    n = len(conversations)
    min_instruction, min_output = min_chars.get("instruction", 0), min_chars.get("output", 0)
    if workers <= 1 or n < PARALLEL_MIN_ROWS:
        parts = [_prepare_slice(conversations, 0, n, min_instruction, min_output)]
    else:
        step = -(-n // (workers * 4))
        bounds = [(s, min(s + step, n)) for s in range(0, n, step)]
        _JOB = (conversations, min_instruction, min_output)
        gc.freeze()  # keep the collector from touching (and so copying) every inherited page
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_run_job, bounds, chunksize=1)
        finally:
            gc.unfreeze()
            _JOB = None
    masked: dict[int, list[dict]] = {}
    for part in parts:
        masked.update(part[3])
    digests = np.frombuffer(b"".join(p[2] for p in parts), dtype=np.uint64).reshape(n, 2)
    return Prepared(
        status=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int8),
        pii_spans=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32),
        digests=digests,
        masked=masked,
    )


def duplicate_of(digests: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """For each row, the index of the first eligible row with the same digest, or -1.

    Only eligible rows take part; the first occurrence (in read order) is kept.
    """
    result = np.full(len(digests), -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    if not len(idx):
        return result
    frame = pd.DataFrame({"a": digests[idx, 0], "b": digests[idx, 1], "i": idx})
    first = frame.groupby(["a", "b"], sort=False)["i"].transform("first").to_numpy()
    dup = first != idx
    result[idx[dup]] = first[dup]
    return result
