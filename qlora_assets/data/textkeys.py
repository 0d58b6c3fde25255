"""Normalised text and content hashes: the keys for dedup, row ids and eval contamination.

Normalisation (NFKC, ASCII lower-cased, whitespace collapsed) is applied to the PII-masked
text, so rows that differ only in case, spacing or in a masked e-mail share one key.
The separators are printable symbols that are not whitespace, so a plain one-line row
takes the fast path (no split/join).
"""
from __future__ import annotations

import unicodedata

import xxhash

TURN_SEP = "\u241e"  # ␞
ROLE_SEP = "\u241f"  # ␟


def normalise_text(text: str) -> bytes:
    """UTF-8 of the normalised text. Lower-casing is done on the bytes (ASCII only): the
    domains are Korean and English, and bytes.lower() is ten times cheaper than str.lower()."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable() or "  " in text:
        text = " ".join(text.split())
    return text.strip().encode("utf-8").lower()


def conversation_key(messages: list[dict]) -> bytes:
    """The normalised conversation (role-aware, order-aware), as UTF-8."""
    return normalise_text(TURN_SEP.join(m["role"] + ROLE_SEP + m["content"].strip() for m in messages))


def digest(key: bytes) -> bytes:
    return xxhash.xxh3_128_digest(key)


def conversation_id(messages: list[dict]) -> str:
    """Hex id of the normalised conversation: the cleaned row's `row_id`."""
    return digest(conversation_key(messages)).hex()


def prompt_id(messages: list[dict]) -> str:
    """Hex id of everything before the answer: two rows asking the same thing share it."""
    return digest(conversation_key(messages[:-1])).hex()
