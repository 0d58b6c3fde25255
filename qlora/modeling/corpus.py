"""Text for the tiny base: every string in the sample data, and chat-rendered conversations.

The tokenizer is trained on every string value found (robust to any JSON shape);
pretraining uses conversations rendered with the Llama-3 template, so the tiny
base already knows the template's structure before LoRA sees it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from qlora.core.io import iter_records
from qlora.modeling.chat_template import render_llama3

DATA_SUFFIXES = {".json", ".jsonl"}
# Used only when no sample data exists yet, so the builder never has an empty corpus.
FALLBACK_TEXTS = [
    "You are a helpful assistant. Answer briefly and politely.",
    "계약서의 해지 조항은 서면 통지 후 30일이 지나면 효력이 발생합니다.",
    "환자는 하루 두 번 식후에 약을 복용해야 합니다.",
    "Your order has shipped and will arrive within three business days.",
    "주문하신 상품은 영업일 기준 3일 이내에 도착합니다.",
    '{"status": "ok", "answer": "yes"}',
    "죄송합니다. 그 요청은 도와드리기 어렵습니다. I'm sorry, I cannot help with that.",
]


def data_files(data_dirs: list[Path]) -> list[Path]:
    found = []
    for root in data_dirs:
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES]
    return sorted(found)


def _records(path: Path) -> Iterator[object]:
    """Yield JSON values of a file; malformed lines or files are skipped (the data assets report them)."""
    for record in iter_records(path):
        if record.error is None:
            yield record.value


def strings_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def as_messages(record: object) -> list[dict] | None:
    """Best-effort conversion of the sample formats (seed, Alpaca, chat, ShareGPT) to messages."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("messages"), list):
        msgs = [m for m in record["messages"] if isinstance(m, dict)]
        return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in msgs] or None
    if isinstance(record.get("conversations"), list):
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        turns = [t for t in record["conversations"] if isinstance(t, dict)]
        return [{"role": roles.get(str(t.get("from")), "user"), "content": str(t.get("value", ""))} for t in turns] or None
    instruction = record.get("instruction")
    answer = record.get("output", record.get("expected_output"))
    if isinstance(instruction, str) and isinstance(answer, str):
        extra = record.get("input")
        prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return None


def collect_corpus(data_dirs: list[Path]) -> tuple[list[str], list[str]]:
    """Returns (every string, for the tokenizer; chat-rendered documents, for pretraining)."""
    strings: list[str] = []
    documents: list[str] = []
    for path in data_files(data_dirs):
        for record in _records(path):
            strings.extend(strings_in(record))
            messages = as_messages(record)
            if messages and all(m["content"].strip() for m in messages):
                documents.append(render_llama3(messages))
    if not strings:
        strings = list(FALLBACK_TEXTS)
    if not documents:
        documents = [render_llama3([{"role": "user", "content": a}, {"role": "assistant", "content": b}])
                     for a, b in zip(FALLBACK_TEXTS, FALLBACK_TEXTS[1:])]
    return strings, documents


def corpus_hash(strings: list[str], documents: list[str]) -> str:
    h = hashlib.sha256()
    for s in strings + ["\x00docs\x00"] + documents:
        h.update(s.encode("utf-8", errors="replace"))
        h.update(b"\x00")
    return h.hexdigest()
