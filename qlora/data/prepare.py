"""The hot path of cleaning: validate, mask PII, hash the masked normalised text; column-wise.

Conversations are flattened to one Arrow array of turns (plus offsets), so validation,
the PII prefilter, normalisation and joining run as C++ kernels over whole columns.
Python touches only the few turns one RE2 scan flags (an '@', a long number, a capital or
a character NFKC may change) and the hash loop. Dedup is vectorised over the digests.

The turns are prepared a chunk of rows at a time, one thread per core (`threads.py`): the
kernels release the GIL, so one thread scans while another hashes, and each chunk's copies
(keys, joined rows) are small and reused instead of fresh memory (~2 s a GB on the 2-CPU VM).
The masked text is kept as a patch (the turns masking changed, and their new text) over the
text as given; `Prepared.turns` applies it when asked for.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from qlora.data.pii import mask_pii
from qlora.data.textkeys import (
    NEEDS_NORMALISING, digests, join_turns, needs_trim, normalise_array, patched_turn_keys, prompt_keys, turn_keys,
)
from qlora.data.threads import map_in_order

OK, EMPTY_TURN, TOO_SHORT = 0, 1, 2
STATUS_REASONS = {EMPTY_TURN: "empty_turn", TOO_SHORT: "too_short"}
# mask_pii changes a text only where it has an '@' or a match of pii._CANDIDATE (a number span
# of 8+ characters); this is both, in RE2 (Python's \d is \p{Nd}).
PII_CANDIDATE = r"@|[+(\p{Nd}][\p{Nd} ().-]{6,}\p{Nd}"


ROWS_PER_CHUNK = 16_384  # ~7 MB of Korean text: big enough for the kernels, small enough to stay cached
# One scan of all the text picks the turns that PII masking or normalisation can change (what
# masking inserts is ASCII capitals: a masked turn is flagged anyway). Candidates rather than
# "three digits": text with years or article numbers is not flagged, and costs nothing more.
SCAN = f"{PII_CANDIDATE}|{NEEDS_NORMALISING}|[A-Z]"


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

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, start: int, stop: int) -> "Turns":
        """Rows [start, stop), sharing this one's buffers."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        return Turns(self.offsets[start:stop + 1] - first, self.roles.slice(first, last - first),
                     self.contents.slice(first, last - first))

    def chunks(self, rows: int = ROWS_PER_CHUNK) -> Iterator["Turns"]:
        for start in range(0, len(self), rows):
            yield self.rows(start, min(start + rows, len(self)))

    def messages(self) -> list[list[dict]]:
        roles, contents, o = self.roles.to_pylist(), self.contents.to_pylist(), self.offsets.tolist()
        return [[{"role": roles[j], "content": contents[j]} for j in range(o[i], o[i + 1])] for i in range(len(o) - 1)]


@dataclass
class Prepared:
    status: np.ndarray  # int8 per row (OK / EMPTY_TURN / TOO_SHORT)
    pii_spans: np.ndarray  # int64 per row: spans masked
    digests: np.ndarray  # (n, 2) uint64: xxh3-128 of the masked, normalised conversation
    masked_index: np.ndarray  # int64, ascending: the turns PII masking changed...
    masked_texts: pa.Array  # ...and their masked text
    maybe_changed: np.ndarray  # bool per turn: flagged by the scan (a superset of what masking/normalising changes)
    source: Turns | None = None  # the turns as given; None when they were not kept (streamed)

    def digests_hex(self, index: int) -> str:
        return self.digests[index].tobytes().hex()

    @cached_property
    def turns(self) -> Turns:
        """The turns with PII masked (a copy of the text, made on first use)."""
        if self.source is None:
            raise ValueError("the text was streamed, not kept: read each chunk's `turns` as it is prepared")
        mask = np.zeros(len(self.source.contents), dtype=bool)
        mask[self.masked_index] = True
        contents = self.source.contents
        if len(self.masked_index):
            contents = pc.replace_with_mask(contents.cast(pa.large_string()), pa.array(mask),
                                            self.masked_texts.cast(pa.large_string()))
        return Turns(self.source.offsets, self.source.roles, contents)

    @cached_property
    def keys(self) -> pa.Array:
        """Per-turn normalised keys of the masked turns, for prompt ids of the rows kept."""
        return turn_keys(self.turns.roles, self.turns.contents, self.maybe_changed)

    @classmethod
    def concat(cls, parts: list["Prepared"], source: Turns | None = None) -> "Prepared":
        """The parts (consecutive chunks of rows) as one; `source`: the whole turns, if kept."""
        turn_starts = np.cumsum([0] + [len(p.maybe_changed) for p in parts])
        return cls(
            status=np.concatenate([p.status for p in parts]) if parts else np.empty(0, np.int8),
            pii_spans=np.concatenate([p.pii_spans for p in parts]) if parts else np.empty(0, np.int64),
            digests=np.concatenate([p.digests for p in parts]) if parts else np.empty((0, 2), np.uint64),
            masked_index=np.concatenate([p.masked_index + s for p, s in zip(parts, turn_starts)] + [np.empty(0, np.int64)]),
            masked_texts=pa.concat_arrays([pa.array([], pa.large_string())] +
                                          [p.masked_texts.cast(pa.large_string()) for p in parts]),
            maybe_changed=np.concatenate([p.maybe_changed for p in parts] + [np.empty(0, bool)]),
            source=source,
        )


def _per_row_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    totals = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return totals[offsets[1:]] - totals[offsets[:-1]]


def _flag(contents: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(contents, pattern).to_numpy(zero_copy_only=False)


def _subset(contents: pa.Array, index: np.ndarray) -> pa.Array:
    return contents.take(pa.array(index, pa.int64()))


def mask_flagged(contents: pa.Array, flagged: np.ndarray) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """PII masking of the turns at `flagged` (indices; every turn masking can change must be there).

    Returns (index of the turns masking changed, their masked text, spans masked per turn)."""
    index = flagged[_flag(_subset(contents, flagged), PII_CANDIDATE)] if len(flagged) else flagged
    counts = np.zeros(len(contents), dtype=np.int64)
    masked = [mask_pii(text) for text in _subset(contents, index).to_pylist()] if len(index) else []
    counts[index] = [n for _, n in masked]
    changed = counts[index] > 0
    return index[changed], pa.array([t for t, n in masked if n], pa.large_string()), counts


def _byte_lengths(contents: pa.Array) -> np.ndarray:
    contents = contents.cast(pa.large_string())
    offsets = np.frombuffer(contents.buffers()[1], dtype=np.int64)[contents.offset:contents.offset + len(contents) + 1]
    return np.diff(offsets)


def _status(lengths: np.ndarray, offsets: np.ndarray, min_chars: dict) -> np.ndarray:
    """Verdict per row from the trimmed character length of each of its turns."""
    output_len = lengths[offsets[1:] - 1]
    instruction_len = _per_row_sum(lengths, offsets) - output_len
    status = np.zeros(len(offsets) - 1, dtype=np.int8)
    short = (instruction_len < min_chars.get("instruction", 0)) | (output_len < min_chars.get("output", 0))
    status[short] = TOO_SHORT
    status[_per_row_sum((lengths == 0).astype(np.int64), offsets) > 0] = EMPTY_TURN
    return status


def _validate(turns: Turns, trim: np.ndarray, min_chars: dict) -> np.ndarray:
    """Verdict per row. Characters are counted only where bytes do not decide: a turn of b bytes
    has at least b/4 characters, and one without whitespace at its ends is what trimming leaves."""
    least = np.where(trim, 0, (_byte_lengths(turns.contents) + 3) // 4)  # 0: unknown (or empty)
    undecided = _status(least, turns.offsets, min_chars) != OK
    if not undecided.any():
        return np.zeros(len(turns), dtype=np.int8)
    rows = np.flatnonzero(undecided)
    starts, counts = turns.offsets[rows], np.diff(turns.offsets)[rows]
    sub_offsets = np.concatenate([[0], np.cumsum(counts)])
    index = np.repeat(starts - sub_offsets[:-1], counts) + np.arange(sub_offsets[-1])  # their turns
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(_subset(turns.contents, index))).to_numpy(zero_copy_only=False)
    status = np.zeros(len(turns), dtype=np.int8)
    status[rows] = _status(lengths.astype(np.int64), sub_offsets, min_chars)
    return status


def prepare_chunk(turns: Turns, min_chars: dict) -> Prepared:
    """Validate, mask and hash every conversation (each a non-empty list of turns) of one chunk.

    Only the turns the scan flags (or with whitespace at an end) are masked and normalised;
    every other turn's key is its text as it is."""
    contents = turns.contents.cast(pa.large_string())
    trim = needs_trim(contents)
    status = _validate(turns, trim, min_chars)
    flagged = _flag(contents, SCAN)
    masked_index, masked_texts, counts = mask_flagged(contents, np.flatnonzero(flagged))
    candidates = np.flatnonzero(flagged | trim)
    given = _subset(contents, candidates)
    masked = given
    if len(masked_index):  # masked_index is a subset of candidates
        masked = pc.replace_with_mask(given, pa.array(np.isin(candidates, masked_index)), masked_texts)
    normalised = normalise_array(masked)
    changed = pc.not_equal(normalised, given).to_numpy(zero_copy_only=False)
    keys = patched_turn_keys(turns.roles, contents, candidates[changed], normalised.filter(pa.array(changed)))
    return Prepared(status=status, pii_spans=_per_row_sum(counts, turns.offsets),
                    digests=digests(join_turns(turns.offsets, keys)), masked_index=masked_index,
                    masked_texts=masked_texts, maybe_changed=flagged, source=turns)


def prepare_chunks(chunks: Iterable[Turns], min_chars: dict, workers: int | None = None) -> Iterator[Prepared]:
    """prepare_chunk of each chunk, in one thread per core, in order; `chunks` may be a stream."""
    return map_in_order(lambda chunk: prepare_chunk(chunk, min_chars), chunks, workers)


def prepare_stream(chunks: Iterable[Turns], min_chars: dict, workers: int | None = None) -> Prepared:
    """All the chunks prepared as one, keeping per row the verdicts and digests and the masked
    text of the turns masking changed, not the text itself: memory stays at a few chunks."""
    return Prepared.concat([replace(part, source=None) for part in prepare_chunks(chunks, min_chars, workers)])


def prepare_turns(turns: Turns, min_chars: dict, rows_per_chunk: int = ROWS_PER_CHUNK) -> Prepared:
    """Validate, mask and hash every conversation (each a non-empty list of turns)."""
    parts = list(prepare_chunks(turns.chunks(rows_per_chunk), min_chars))
    return Prepared.concat(parts, source=turns) if len(parts) != 1 else parts[0]


def prompt_ids(prepared: Prepared) -> list[str]:
    """Hex id per row of everything before the answer (see textkeys.prompt_id)."""
    return [d.tobytes().hex() for d in digests(prompt_keys(prepared.turns.offsets, prepared.keys))]


def prepare_rows(conversations: list[list[dict]], min_chars: dict) -> Prepared:
    return prepare_turns(Turns.from_conversations(conversations), min_chars)


def _first_of_groups(codes: np.ndarray) -> np.ndarray:
    """For codes numbered in order of first appearance (pd.factorize), the position of each one's first row."""
    if not len(codes):
        return codes
    new = np.empty(len(codes), dtype=bool)
    new[0] = True
    new[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return np.flatnonzero(new)[codes]


def duplicate_of(digests: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """For each row, the index of the first eligible row with the same digest, or -1.

    Only eligible rows take part; the first occurrence (in read order) is kept.
    Grouped on the first 64 bits (one hash table pass, ~5x faster than grouping on both
    halves); the other 64 are then compared, and a collision falls back to both halves.
    """
    result = np.full(len(digests), -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    if not len(idx):
        return result
    first = idx[_first_of_groups(pd.factorize(digests[idx, 0])[0])]
    if not (digests[first, 1] == digests[idx, 1]).all():
        frame = pd.DataFrame({"a": digests[idx, 0], "b": digests[idx, 1], "i": idx})
        first = frame.groupby(["a", "b"], sort=False)["i"].transform("first").to_numpy()
    dup = first != idx
    result[idx[dup]] = first[dup]
    return result
