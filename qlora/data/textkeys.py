"""Normalised text and content hashes: the keys for dedup, row ids and eval contamination.

Normalisation (NFKC, whitespace collapsed and trimmed, ASCII lower-cased) is applied to the
PII-masked text, so rows that differ only in spacing, case or a masked e-mail share one key.
It runs column-wise on Arrow arrays (C++ kernels), one call per step for a whole dataset;
a single conversation goes through the same code, so every key has one definition.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

TURN_SEP = "\u241e"  # ␞ printable, not whitespace: never collapsed or trimmed away
ROLE_SEP = "\u241f"  # ␟
# Text needing NFKC or whitespace work: anything but printable ASCII and Hangul syllables
# (both already NFKC), or a double space. Most Korean/English text has none, and NFKC is the
# slowest kernel, so it runs only on the turns this flags.
NEEDS_NORMALISING = r"[^ -~\x{AC00}-\x{D7A3}]|  "
_SPACE_RUN = r"[\t\n\v\f\r \x{85}\x{1680}\x{2028}\x{2029}]+"


def _normalise_chunk(contents: pa.Array) -> pa.Array:
    odd = pc.match_substring_regex(contents, NEEDS_NORMALISING)
    if pc.any(odd).as_py():
        fixed = pc.utf8_normalize(pc.filter(contents, odd), form="NFKC")
        fixed = pc.replace_substring_regex(fixed, _SPACE_RUN, " ")
        contents = pc.replace_with_mask(contents, odd, fixed)
    return pc.ascii_lower(pc.utf8_trim_whitespace(contents))


def _hangul_lead(byte: np.ndarray) -> np.ndarray:
    return (byte >= 0xEA) & (byte <= 0xED)  # U+A000..U+D7FF: no whitespace there


def needs_trim(contents: pa.Array) -> np.ndarray:
    """bool per string, True for every string with whitespace at either end (and a few more).

    Reads only the bytes at the ends, from the Arrow buffers: a kernel would copy all the text,
    and on this VM fresh memory costs ~2 s a GB. ASCII control/space bytes and any non-ASCII
    character outside U+A000..U+D7FF (Hangul) count as maybe-whitespace."""
    contents = contents.cast(pa.large_string())
    _, offset_buf, data_buf = contents.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int64)[contents.offset:contents.offset + len(contents) + 1]
    starts, ends = offsets[:-1], offsets[1:]
    nonempty = ends > starts
    if data_buf is None or not nonempty.any():
        return np.zeros(len(contents), dtype=bool)
    data = np.frombuffer(data_buf, dtype=np.uint8)
    first, last = data[np.where(nonempty, starts, 0)], data[np.where(nonempty, ends - 1, 0)]
    first_maybe = (first <= 0x20) | (first == 0x7F) | ((first >= 0x80) & ~_hangul_lead(first))
    last_is_hangul = (ends - 3 >= starts) & _hangul_lead(data[np.maximum(ends - 3, 0)])
    last_maybe = np.where(last < 0x80, (last <= 0x20) | (last == 0x7F), ~last_is_hangul)
    return nonempty & (first_maybe | last_maybe)


def _fixes(contents: pa.Array, maybe_changed: np.ndarray) -> tuple[np.ndarray, pa.Array] | None:
    """(mask, normalised text of the masked turns) for the turns normalisation changes, or None.

    maybe_changed (bool per turn) marks every turn that may hold an ASCII capital or match
    NEEDS_NORMALISING (from the caller's prefilter scan); with the turns that have whitespace
    at an end, those are the only ones normalisation can change."""
    index = np.flatnonzero(maybe_changed | needs_trim(contents))
    if not len(index):
        return None
    subset = contents.take(pa.array(index))
    fixed = _normalise_chunk(subset)
    changed = pc.not_equal(fixed, subset).to_numpy(zero_copy_only=False)
    if not changed.any():
        return None
    mask = np.zeros(len(contents), dtype=bool)
    mask[index[changed]] = True
    return mask, fixed.filter(pa.array(changed))


def normalise_array(contents: pa.Array, maybe_changed: np.ndarray | None = None) -> pa.Array:
    """NFKC (where needed), whitespace collapsed and trimmed, ASCII lower-cased (maybe_changed: see _fixes)."""
    if maybe_changed is None:
        return _normalise_chunk(contents)  # callers pass one chunk; prepare.py threads the chunks
    fixes = _fixes(contents, maybe_changed)
    return contents if fixes is None else pc.replace_with_mask(contents, pa.array(fixes[0]), fixes[1])


def _nulls_where(contents: pa.Array, mask: np.ndarray) -> pa.Array:
    """Zero-copy view of a large_string array with nulls where `mask` is True (no nulls before)."""
    _, offset_buf, data_buf = contents.buffers()
    offsets = offset_buf.slice(contents.offset * 8, (len(contents) + 1) * 8)  # int64 offsets of this slice
    return pa.LargeStringArray.from_buffers(len(contents), offsets, data_buf, pa.array(~mask).buffers()[1],
                                            int(mask.sum()))


def patched_turn_keys(roles: pa.Array, contents: pa.Array, index: np.ndarray, fixed: pa.Array) -> pa.Array:
    """role + ROLE_SEP + content per turn, where turn index[k] (ascending) has content fixed[k].

    One copy of the text, not two (patched, then joined): the unchanged turns (a view of
    `contents` with the patched ones null) and the patched ones go through one join, nulls skipped."""
    separator = pa.scalar(ROLE_SEP, pa.large_string())
    roles, contents = roles.cast(pa.large_string()), contents.cast(pa.large_string())
    if not len(index):
        return pc.binary_join_element_wise(roles, contents, separator)
    if contents.null_count:
        contents = pc.replace_with_mask(contents, pa.array(np.isin(np.arange(len(contents)), index)), fixed)
        return pc.binary_join_element_wise(roles, contents, separator)
    mask = np.zeros(len(contents), dtype=bool)
    mask[index] = True
    patched = pc.replace_with_mask(pa.nulls(len(contents), pa.large_string()), pa.array(mask),
                                   fixed.cast(pa.large_string()))
    return pc.binary_join_element_wise(roles, _nulls_where(contents, mask), patched, separator, null_handling="skip")


def turn_keys(roles: pa.Array, contents: pa.Array, maybe_changed: np.ndarray | None = None) -> pa.Array:
    """role + ROLE_SEP + normalised content, per turn (maybe_changed: see _fixes)."""
    if maybe_changed is None:
        separator = pa.scalar(ROLE_SEP, pa.large_string())
        return pc.binary_join_element_wise(roles.cast(pa.large_string()), normalise_array(contents), separator)
    fixes = _fixes(contents, maybe_changed)
    if fixes is None:
        return patched_turn_keys(roles, contents, np.empty(0, dtype=np.int64), pa.array([], pa.large_string()))
    mask, fixed = fixes
    return patched_turn_keys(roles, contents, np.flatnonzero(mask), fixed)


def join_turns(offsets: np.ndarray, keys: pa.Array) -> pa.Array:
    """One key per conversation; turns [offsets[i], offsets[i+1]) belong to row i."""
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), keys)
    return pc.binary_join(lists, pa.scalar(TURN_SEP, pa.large_string()))


def conversation_keys(offsets: np.ndarray, roles: pa.Array, contents: pa.Array) -> pa.Array:
    return join_turns(offsets, turn_keys(roles, contents))


def prompt_keys(offsets: np.ndarray, keys: pa.Array) -> pa.Array:
    """Conversation keys without each conversation's last turn (the answer)."""
    not_last = np.ones(len(keys), dtype=bool)
    not_last[offsets[1:] - 1] = False
    return join_turns(offsets - np.arange(len(offsets)), keys.filter(pa.array(not_last)))


def digests(keys: pa.Array) -> np.ndarray:
    """(n, 2) uint64: xxh3-128 of each key's UTF-8 bytes, read straight from the Arrow buffer."""
    keys = keys.cast(pa.large_string())
    _, offset_buf, data_buf = keys.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int64)[keys.offset:keys.offset + len(keys) + 1]
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    hash128 = xxhash.xxh3_128_digest
    joined = b"".join([hash128(data[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())])
    return np.frombuffer(joined, dtype=np.uint64).reshape(len(keys), 2)


def _single(messages: list[dict]) -> str:
    roles = pa.array([m["role"] for m in messages], pa.large_string())
    contents = pa.array([m["content"] for m in messages], pa.large_string())
    key = conversation_keys(np.array([0, len(messages)]), roles, contents)
    return digests(key)[0].tobytes().hex()


def conversation_id(messages: list[dict]) -> str:
    """Hex id of the normalised conversation: the cleaned row's `row_id`."""
    return _single(messages)


def prompt_id(messages: list[dict]) -> str:
    """Hex id of everything before the answer: two rows asking the same thing share it."""
    return _single(messages[:-1])
