"""Normalised text and content hashes: the keys for dedup, row ids and eval contamination.

Normalisation (NFKC, whitespace collapsed and trimmed, ASCII lower-cased) is applied to the
PII-masked text, so rows that differ only in spacing, case or a masked e-mail share one key.
It runs column-wise on Arrow arrays (C++ kernels), one call per step for a whole dataset;
a single conversation goes through the same code, so every key has one definition.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def _nfkc_spaces(contents: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(pc.utf8_normalize(contents, form="NFKC"), _SPACE_RUN, " ")


def _normalise_chunk(contents: pa.Array) -> pa.Array:
    odd = pc.match_substring_regex(contents, NEEDS_NORMALISING)
    if pc.any(odd).as_py():
        contents = pc.replace_with_mask(contents, odd, _nfkc_spaces(pc.filter(contents, odd)))
    return pc.ascii_lower(pc.utf8_trim_whitespace(contents))


def map_halves(kernel, array: pa.Array) -> pa.Array:
    """kernel(array) computed on two halves in two threads (Arrow kernels release the GIL)."""
    if len(array) < 100_000:
        return kernel(array)
    half = len(array) // 2
    with ThreadPoolExecutor(2) as pool:
        return pa.concat_arrays(list(pool.map(kernel, [array.slice(0, half), array.slice(half)])))


def _trim_lower(contents: pa.Array) -> pa.Array:
    return pc.ascii_lower(pc.utf8_trim_whitespace(contents))


def normalise_array(contents: pa.Array, maybe_odd: np.ndarray | None = None) -> pa.Array:
    """maybe_odd (bool per turn), when given, marks every turn that may match NEEDS_NORMALISING:
    the regex then scans only those (the caller's prefilter has already scanned the rest)."""
    if maybe_odd is None:
        return map_halves(_normalise_chunk, contents)
    index = np.flatnonzero(maybe_odd)
    if len(index):
        subset = contents.take(pa.array(index))
        odd = pc.match_substring_regex(subset, NEEDS_NORMALISING).to_numpy(zero_copy_only=False)
        if odd.any():
            mask = np.zeros(len(contents), dtype=bool)
            mask[index[odd]] = True
            contents = pc.replace_with_mask(contents, pa.array(mask), _nfkc_spaces(subset.filter(pa.array(odd))))
    return map_halves(_trim_lower, contents)


def turn_keys(roles: pa.Array, contents: pa.Array, maybe_odd: np.ndarray | None = None) -> pa.Array:
    """role + ROLE_SEP + normalised content, per turn (maybe_odd: see normalise_array)."""
    separator = pa.scalar(ROLE_SEP, pa.large_string())
    return pc.binary_join_element_wise(roles.cast(pa.large_string()), normalise_array(contents, maybe_odd), separator)


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
    joined = b"".join(hash128(data[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()))
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
