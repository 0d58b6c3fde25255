"""The hot path of cleaning: validate, mask PII, hash the masked normalised text; column-wise.

Conversations are flattened to one Arrow array of turns (plus offsets), so validation,
the PII prefilter, normalisation and joining run as C++ kernels over whole columns.
Python touches only the few turns the prefilter flags (an '@' or three digits in a row)
and the hash loop. Dedup is vectorised over the digests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from qlora_assets.data.pii import mask_pii
from qlora_assets.data.textkeys import (
    NEEDS_NORMALISING, conversation_digests, digests, map_halves, needs_trim, prompt_keys, turn_keys,
)

OK, EMPTY_TURN, TOO_SHORT = 0, 1, 2
STATUS_REASONS = {EMPTY_TURN: "empty_turn", TOO_SHORT: "too_short"}
PII_PREFILTER = r"@|[0-9]{3}"  # every PII pattern holds one of these (pii.mask_pii's own prefilters)
PII_CANDIDATE = r"@|[+(\p{Nd}][\p{Nd} ().-]{6,}\p{Nd}"  # pii._CANDIDATE in RE2 (Python's \d is \p{Nd})


@dataclass
class Turns:
    offsets: np.ndarray  # int64, n + 1: turns of row i are [offsets[i], offsets[i+1])
    roles: pa.Array
    contents: pa.Array

    @classmethod
    def from_conversations(cls, conversations: list[list[dict]]) -> "Turns":
        lengths = np.fromiter((len(c) for c in conversations), dtype=np.int64, count=len(conversations))
        offsets = np.zeros(len(conversations) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        roles = pa.array([m["role"] for c in conversations for m in c], pa.large_string())
        contents = pa.array([m["content"] for c in conversations for m in c], pa.large_string())
        return cls(offsets, roles, contents)

    def messages(self) -> list[list[dict]]:
        roles, contents, o = self.roles.to_pylist(), self.contents.to_pylist(), self.offsets.tolist()
        return [[{"role": roles[j], "content": contents[j]} for j in range(o[i], o[i + 1])] for i in range(len(o) - 1)]


@dataclass
class Prepared:
    status: np.ndarray  # int8 per row (OK / EMPTY_TURN / TOO_SHORT)
    pii_spans: np.ndarray  # int64 per row: spans masked
    digests: np.ndarray  # (n, 2) uint64: xxh3-128 of the masked, normalised conversation
    turns: Turns  # with masked contents
    keys: pa.Array | None = None  # per-turn normalised keys, for prompt ids of the rows kept

    def digests_hex(self, index: int) -> str:
        return self.digests[index].tobytes().hex()


def _per_row_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    totals = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return totals[offsets[1:]] - totals[offsets[:-1]]


def _flag(contents: pa.Array, pattern: str) -> np.ndarray:
    flags = map_halves(lambda part: pc.match_substring_regex(part, pattern), contents)
    return flags.to_numpy(zero_copy_only=False)


def mask_turns(turns: Turns, maybe_pii: np.ndarray | None = None) -> tuple[Turns, np.ndarray]:
    """Mask PII in every turn; returns the masked turns and the spans masked per row.

    maybe_pii (bool per turn), when given, marks every turn that may match the PII prefilter
    (a superset from a combined scan): the prefilter then runs only on those."""
    if maybe_pii is None:
        index = np.flatnonzero(_flag(turns.contents, PII_PREFILTER))
    else:
        index = np.flatnonzero(maybe_pii)
        index = index[_flag(turns.contents.take(pa.array(index)), PII_PREFILTER)] if len(index) else index
    if len(index):  # mask_pii changes a turn only if it has an '@' or a number span of 8+ characters
        index = index[_flag(turns.contents.take(pa.array(index)), PII_CANDIDATE)]
    counts = np.zeros(len(turns.contents), dtype=np.int64)
    if not len(index):
        return turns, _per_row_sum(counts, turns.offsets)
    masked = [mask_pii(text) for text in turns.contents.take(pa.array(index)).to_pylist()]
    counts[index] = [n for _, n in masked]
    changed = counts > 0
    contents = pc.replace_with_mask(
        turns.contents, pa.array(changed), pa.array([t for t, n in masked if n], pa.large_string())
    ) if changed.any() else turns.contents
    return Turns(turns.offsets, turns.roles, contents), _per_row_sum(counts, turns.offsets)


def prepare_turns(turns: Turns, min_chars: dict) -> Prepared:
    """Validate, mask and hash every conversation (each a non-empty list of turns)."""
    n = len(turns.offsets) - 1
    lengths = pc.utf8_length(turns.contents).to_numpy(zero_copy_only=False).astype(np.int64)
    edge = np.flatnonzero(needs_trim(turns.contents))  # trim only these: no copy of all the text
    if len(edge):
        lengths[edge] = pc.utf8_length(pc.utf8_trim_whitespace(turns.contents.take(pa.array(edge)))).to_numpy()
    last = turns.offsets[1:] - 1
    output_len = lengths[last]
    instruction_len = _per_row_sum(lengths, turns.offsets) - output_len
    empty_turns = _per_row_sum((lengths == 0).astype(np.int64), turns.offsets)
    status = np.zeros(n, dtype=np.int8)
    short = (instruction_len < min_chars.get("instruction", 0)) | (output_len < min_chars.get("output", 0))
    status[short] = TOO_SHORT
    status[empty_turns > 0] = EMPTY_TURN
    # One regex scan over all the text; PII masking and normalisation then run on the few turns
    # it flags (masking changes only flagged turns; what it inserts is ASCII, and capitals).
    flagged = _flag(turns.contents, f"{PII_PREFILTER}|{NEEDS_NORMALISING}|[A-Z]")
    masked, spans = mask_turns(turns, flagged)
    keys = turn_keys(masked.roles, masked.contents, flagged)
    return Prepared(status=status, pii_spans=spans, digests=conversation_digests(masked.offsets, keys), turns=masked,
                    keys=keys)


def prompt_ids(prepared: Prepared) -> list[str]:
    """Hex id per row of everything before the answer (see textkeys.prompt_id)."""
    return [d.tobytes().hex() for d in digests(prompt_keys(prepared.turns.offsets, prepared.keys))]


def prepare_rows(conversations: list[list[dict]], min_chars: dict) -> Prepared:
    return prepare_turns(Turns.from_conversations(conversations), min_chars)


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
