"""Benchmark: the seed's cleaning code vs the platform's, on the same 1,000,000 rows, in one run.

Rows: seed format {instruction, output}, ~0.9 GB of UTF-8 text (Korean), 4% exact duplicates,
2% rows with PII (e-mail, phone, RRN, card), 0.5% too short, 10% with harmless numbers.
Steps timed for both: validate + dedup + PII mask, from the same in-memory list of dicts, then
from disk (the seed: `json.load` of a JSON array; the platform: the same rows as JSONL).
The two must keep exactly the same rows (the bench has no rows that differ only in PII,
where the platform rightly removes more). Then the platform's full cleaning (+ language ID,
token counts with a byte-level BPE tokenizer, chat-template rendering) on a subset.

    .venv/bin/python bench/cleaning.py [--rows 1000000] [--full-rows 200000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from qlora.data.config import load_data_config  # noqa: E402
from qlora.data.formats import normalise  # noqa: E402
from qlora.data.prepare import OK, duplicate_of, prepare_stream  # noqa: E402
from qlora.data.columnar import read_seed_jsonl, seed_record_chunks  # noqa: E402
from seed_cleaning import run_seed_pipeline  # noqa: E402


class PeakMemory:
    """Samples RSS (cheap /proc/<pid>/status reads) of this process and of its worker children.

    Workers are forked, so their RSS counts pages still shared with the parent: the sum is
    an upper bound on the memory really in use."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in open(f"/proc/{pid}/task/{tid}/children").read().split()]
            except OSError:
                pass
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            me = os.getpid()
            self.peak = max(self.peak, self._rss(me) + sum(self._rss(c) for c in self._children(me)))
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self._rss(os.getpid())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def generate(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    syllables = [chr(0xAC00 + rng.randrange(11172)) for _ in range(600)]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(500)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(8, 14))) + "." for _ in range(3000)]
    unique = int(n * 0.96)
    rows = []
    for i in range(unique):
        ins, out = " ".join(rng.choices(sentences, k=4)), " ".join(rng.choices(sentences, k=5))
        roll = rng.random()
        if roll < 0.02:  # PII, unique per row
            ins += rng.choice([f" 연락처 010-{i % 10000:04d}-{rng.randrange(10000):04d}", f" 메일 user{i}@example.com",
                               f" 주민번호 900101-1{i % 1000000:06d}", " 카드 4111 1111 1111 1111"])
        elif roll < 0.025:
            ins = "짧은 질문"
        elif roll < 0.125:
            out += f" 제{rng.randrange(1, 99)}조 {rng.randrange(1990, 2030)}년"
        rows.append({"row": i, "instruction": ins, "output": out})
    for j in range(n - unique):  # exact duplicates under a new row id: keeping the first copy matters
        rows.append({**rows[rng.randrange(unique)], "row": unique + j})
    rng.shuffle(rows)
    return rows


def platform_three_steps(raw: list[dict]) -> list[int]:
    """Validate, mask, dedup: the records are encoded a chunk at a time, each chunk prepared
    in a thread while the next is encoded. Kept per row: verdict, digest, and the masked text
    of every turn that masking changed (the rest of the masked text is the input itself)."""
    rules = load_data_config().rules("legal-ko")
    prepared = prepare_stream(seed_record_chunks(raw), rules.min_chars)
    valid = prepared.status == OK
    keep = valid & (duplicate_of(prepared.digests, valid) < 0)
    return [raw[i]["row"] for i in np.flatnonzero(keep)]


def platform_from_jsonl(path: Path) -> list[int]:
    """The same three steps, starting from the file: pyarrow parses JSONL straight into Arrow,
    a block at a time, each block prepared while the next is parsed."""
    rules = load_data_config().rules("legal-ko")
    rows = []

    def turns_of_file():
        for other_columns, turns in read_seed_jsonl(path):
            rows.append(other_columns.column("row").to_numpy())
            yield turns

    prepared = prepare_stream(turns_of_file(), rules.min_chars)
    valid = prepared.status == OK
    keep = valid & (duplicate_of(prepared.digests, valid) < 0)
    return np.concatenate(rows)[keep].tolist()


def bench_tokenizer(texts: list[str]):
    """A byte-level BPE with the Llama-3 template, like the tiny base's (trained here, in seconds)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from qlora.modeling.chat_template import LLAMA3_CHAT_TEMPLATE, SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4000, special_tokens=SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[4])
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--full-rows", type=int, default=200_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    raw = generate(args.rows)
    text_bytes = sum(len(s["instruction"].encode()) + len(s["output"].encode()) for s in raw)
    print(f"generated {len(raw):,} rows, {text_bytes / 1e9:.2f} GB text in {time.perf_counter() - t0:.0f}s", flush=True)

    with PeakMemory() as seed_mem:
        t = time.perf_counter()
        seed_kept = [s["row"] for s in run_seed_pipeline(raw)]
        seed_s = time.perf_counter() - t
    print(f"seed: {seed_s:.1f}s", flush=True)
    with PeakMemory() as plat_mem:
        t = time.perf_counter()
        plat_kept = platform_three_steps(raw)
        plat_s = time.perf_counter() - t
    print(f"platform: {plat_s:.1f}s", flush=True)
    same = sorted(seed_kept) == sorted(plat_kept)

    # From disk: the seed's code begins with json.load of a JSON array; the platform reads JSONL.
    folder = Path(tempfile.mkdtemp(prefix="bench_cleaning_"))
    (folder / "raw.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    (folder / "raw.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in raw) + "\n", encoding="utf-8")
    with PeakMemory() as seed_file_mem:
        t = time.perf_counter()
        seed_file_kept = [s["row"] for s in run_seed_pipeline(json.load(open(folder / "raw.json", encoding="utf-8")))]
        seed_file_s = time.perf_counter() - t
    with PeakMemory() as plat_file_mem:
        t = time.perf_counter()
        plat_file_kept = platform_from_jsonl(folder / "raw.jsonl")
        plat_file_s = time.perf_counter() - t
    shutil.rmtree(folder)
    same_file = sorted(seed_file_kept) == sorted(plat_file_kept) == sorted(seed_kept)
    print(f"from file: seed {seed_file_s:.1f}s, platform {plat_file_s:.1f}s", flush=True)

    from qlora.data.cleaning import clean_rows

    subset = raw[: args.full_rows]
    frame = pd.DataFrame({
        "source_file": "bench.jsonl", "line": np.arange(1, len(subset) + 1), "format": "seed", "licence": "internal",
        "messages_json": [json.dumps(normalise(s)[1], ensure_ascii=False) for s in subset],
    })
    tokenizer = bench_tokenizer([s["instruction"] for s in raw[:20000]])
    config = load_data_config()
    with PeakMemory() as full_mem:
        t = time.perf_counter()
        result = clean_rows(frame, config.rules("legal-ko"), config.detector_languages(), tokenizer)
        full_s = time.perf_counter() - t
    report = {
        "rows": len(raw), "text_gb": round(text_bytes / 1e9, 2), 
        "seed_s": round(seed_s, 1), "seed_rows_per_s": round(len(raw) / seed_s),
        "seed_peak_rss_gb": round(seed_mem.peak / 1e9, 2), "seed_extra_gb": round((seed_mem.peak - seed_mem.base) / 1e9, 2),
        "platform_s": round(plat_s, 1), "platform_rows_per_s": round(len(raw) / plat_s),
        "platform_peak_rss_gb": round(plat_mem.peak / 1e9, 2), "platform_extra_gb": round((plat_mem.peak - plat_mem.base) / 1e9, 2),
        "speedup": round(seed_s / plat_s, 1), "same_rows_kept": same, "rows_kept": len(plat_kept),
        "from_file_seed_s": round(seed_file_s, 1), "from_file_platform_s": round(plat_file_s, 1),
        "from_file_speedup": round(seed_file_s / plat_file_s, 1), "from_file_same_rows": same_file,
        "from_file_seed_rows_per_s": round(len(raw) / seed_file_s), "from_file_platform_rows_per_s": round(len(raw) / plat_file_s),
        "from_file_seed_extra_gb": round((seed_file_mem.peak - seed_file_mem.base) / 1e9, 2),
        "from_file_platform_extra_gb": round((plat_file_mem.peak - plat_file_mem.base) / 1e9, 2),
        "full_rows": len(subset), "full_s": round(full_s, 1), "full_rows_per_s": round(len(subset) / full_s),
        "full_peak_rss_gb": round(full_mem.peak / 1e9, 2), "full_accounting_balanced": result.accounting()["balanced"],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=1))
    if not (same and same_file):
        sys.exit("the seed and the platform kept different rows")


if __name__ == "__main__":
    main()
