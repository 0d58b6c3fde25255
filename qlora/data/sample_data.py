"""`qlora sample-data`: the committed sample domains, regenerated deterministically.

Per domain, four files in the four formats (seed JSON array, Alpaca JSONL, chat JSONL,
ShareGPT JSON array) plus `data/eval/<domain>.jsonl`. Eval rows are held-out
(phrasing, topic) combinations of the same templates, so they never occur in training.
Licences: a per-row `license` field, except chat.jsonl, whose licence is its sidecar
`chat.jsonl.license`. Planted problems are listed in `PLANTED` (see data/README.md).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from qlora.data.sample_vocab import DOMAINS, Language

FILES = ("qa.json", "alpaca.jsonl", "chat.jsonl", "sharegpt.json")
ROW_LICENCE = {"qa.json": "cc-by-4.0", "alpaca.jsonl": "internal", "sharegpt.json": "cc-by-4.0"}
SIDECARS = {"chat.jsonl": "internal"}
INPUT_MARKERS = (" 내용: ", " 문의: ", " 질문: ", " Message: ")
PII_KO = [  # (text with PII, same text with other PII): the pair differs only in PII
    ("제 연락처는 010-1234-5678 이고 메일은 kim.minsu@example.com 입니다.",
     "제 연락처는 010-9876-5432 이고 메일은 lee_j@example.co.kr 입니다."),
    ("회신은 01055556666 또는 +82 10-2345-6789 로 부탁드립니다.",
     "회신은 01077778888 또는 +82 10-3456-7890 로 부탁드립니다."),
]
PII_SINGLE_KO = ["주민등록번호 900101-1234567 인 본인이 직접 문의합니다.", "카드 4111 1111 1111 1111 로 결제한 고객입니다.",
                 "사무실 번호는 02-312-4567 이고 지점은 (031) 555-1234 입니다.", "법인카드 5500-0000-0000-0004 사용자입니다."]
WRONG_LANGUAGE = {
    "ko": ["契約書の解除条項について、初心者にも分かるように短く説明してください。",
           "Please explain in one short sentence what this word means for a complete beginner.",
           "请用一句简单的话解释这个词语的意思，让初学者也能理解。"],
    "en": ["契約書の解除条項について、初心者にも分かるように短く説明してください。",
           "请用一句简单的话解释这个词语的意思，让初学者也能理解。",
           "パスワードを忘れてしまいました。再設定の方法を簡単に教えてください。"],
}
PLANTED = ["exact duplicates x4", "rows differing only in PII x2 pairs", "PII (RRN, cards, Korean phones) x4",
           "too short x2", "wrong language x3", "licence not allowed x2 + missing x1",
           "malformed JSON line", "bad encoding (CP949) line", "missing field", "wrong type x3"]


def _combos(lang: Language, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """All (prefix, phrasing, slot) examples; one per slot and task held out for eval."""
    train, held_out = [], []
    tasks = [("explain", lang.explain_prompts, list(lang.topics)), ("json", lang.json_prompts, list(lang.topics)),
             ("refuse", lang.refuse_prompts, list(lang.harms))]
    for kind, prompts, slots in tasks:
        for slot in slots:
            if kind == "refuse":
                answer = lang.refusal
            else:
                text, obj = lang.topics[slot]
                answer = text if kind == "explain" else json.dumps(obj, ensure_ascii=False)
            rows = [{"prompt": prefix + p.format(t=slot, x=slot), "answer": answer, "kind": kind, "lang": lang}
                    for prefix in lang.prefixes for p in prompts]
            rng.shuffle(rows)
            held_out.append(rows[0])
            train.extend(rows[1:])
    return train, held_out


def _as_row(file: str, example: dict, rng: random.Random) -> dict:
    prompt, answer, lang = example["prompt"], example["answer"], example["lang"]
    system = lang.system if rng.random() < 0.25 else None
    if file == "qa.json":
        return {"instruction": prompt, "output": answer, "license": ROW_LICENCE[file]}
    if file == "alpaca.jsonl":
        for marker in INPUT_MARKERS:
            if marker in prompt:
                head, tail = prompt.split(marker, 1)
                return {"instruction": head, "input": marker.strip() + " " + tail, "output": answer, "license": "internal"}
        return {"instruction": prompt, "input": "", "output": answer, "license": "internal"}
    if file == "chat.jsonl":
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return {"messages": turns}
    turns = ([{"from": "system", "value": system}] if system else []) + [
        {"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    return {"conversations": turns, "license": ROW_LICENCE[file]}


def _plant(files: dict[str, list], train: list[dict], lang: Language, rng: random.Random, full: bool) -> None:
    for _ in range(4 if full else 1):  # exact duplicates, in the same file as the original
        file = rng.choice(["qa.json", "chat.jsonl", "sharegpt.json"])
        files[file].append(json.loads(json.dumps(rng.choice(files[file]))))
    explain = [e for e in train if e["kind"] == "explain" and e["lang"] is lang]
    pii_pairs = PII_KO if lang.code == "ko" else [
        ("My email is john.doe@example.com, please reply there.", "My email is jane.roe@example.org, please reply there.")]
    for first, second in pii_pairs:
        base = rng.choice(explain)
        for pii in (first, second):
            files["qa.json"].append({"instruction": f"{pii} {base['prompt']}", "output": base["answer"], "license": "cc-by-4.0"})
    for pii in PII_SINGLE_KO if lang.code == "ko" else []:
        base = rng.choice(explain)
        files["alpaca.jsonl"].append({"instruction": f"{pii} {base['prompt']}", "input": "", "output": base["answer"], "license": "internal"})
    if not full:  # a domain's second language only adds its own duplicates and PII rows
        return
    files["qa.json"].append({"instruction": "요약", "output": "네.", "license": "cc-by-4.0"})
    files["alpaca.jsonl"].append({"instruction": explain[0]["prompt"], "input": "", "output": "예", "license": "internal"})
    for text in WRONG_LANGUAGE[lang.code]:
        files["chat.jsonl"].append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": text}]})
    files["qa.json"].append({"instruction": explain[1]["prompt"] + " 추가 질문", "output": explain[1]["answer"], "license": "cc-by-nc-4.0"})
    files["qa.json"].append({"instruction": explain[2]["prompt"] + " 추가 질문", "output": explain[2]["answer"]})  # no licence
    files["sharegpt.json"].append({"conversations": [{"from": "human", "value": explain[3]["prompt"] + " 추가"},
                                                     {"from": "gpt", "value": explain[3]["answer"]}], "license": "proprietary"})
    files["sharegpt.json"].append("this element is a string, not an object")  # wrong type
    files["sharegpt.json"].append({"conversations": [{"from": "human", "value": explain[4]["prompt"]},
                                                     {"from": "bot", "value": explain[4]["answer"]}], "license": "cc-by-4.0"})
    files["alpaca.jsonl"].append({"instruction": explain[5]["prompt"], "input": "", "license": "internal"})  # no output
    files["alpaca.jsonl"].append({"instruction": explain[6]["prompt"], "input": "", "output": 42, "license": "internal"})
    bad = json.dumps({"instruction": explain[7]["prompt"], "output": explain[7]["answer"]}, ensure_ascii=False)
    files["alpaca.jsonl"].append(("raw", bad[: len(bad) // 2].encode("utf-8")))  # malformed: cut in half
    files["alpaca.jsonl"].append(("raw", bad.encode("cp949", errors="replace")))  # bad encoding


def _write(path: Path, rows: list) -> None:
    encoded = [r[1] if isinstance(r, tuple) else json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]
    if path.suffix == ".jsonl":
        path.write_bytes(b"\n".join(encoded) + b"\n")
    else:  # one element per line, so line numbers point at rows
        path.write_bytes(b"[\n" + b",\n".join(encoded) + b"\n]\n")


def write_sample_data(data_dir: Path, seed: int = 20261128) -> dict[str, dict[str, int]]:
    """(Re)write data/training/<domain>/ and data/eval/<domain>.jsonl; returns row counts."""
    counts = {}
    for number, (domain, languages) in enumerate(sorted(DOMAINS.items())):
        rng = random.Random(seed + number)
        train, held_out = [], []
        for lang in languages:
            t, h = _combos(lang, rng)
            train += t
            held_out += h
        files: dict[str, list] = {f: [] for f in FILES}
        for example in train:
            file = rng.choice(FILES)
            files[file].append(_as_row(file, example, rng))
        for i, lang in enumerate(languages):
            _plant(files, train, lang, rng, full=i == 0)
        folder = data_dir / "training" / domain
        folder.mkdir(parents=True, exist_ok=True)
        for file, rows in files.items():
            rng.shuffle(rows)
            _write(folder / file, rows)
        for file, licence in SIDECARS.items():
            (folder / f"{file}.license").write_text(licence + "\n", encoding="utf-8")
        eval_rows = []
        for example in held_out:
            row = {"instruction": example["prompt"], "expected_output": example["answer"], "license": "internal"}
            if example["kind"] == "json":
                row["expected_format"] = "json"
            if example["kind"] == "refuse":
                row["should_refuse"] = True
            eval_rows.append(row)
        (data_dir / "eval").mkdir(parents=True, exist_ok=True)
        _write(data_dir / "eval" / f"{domain}.jsonl", eval_rows)
        counts[domain] = {"train_records": sum(len(r) for r in files.values()), "eval_rows": len(eval_rows)}
    return counts
