"""Offline eval metrics: ROUGE-L that works for Korean, JSON compliance, refusals, latency, tokens/s.

Every aggregate returns a float or ``NotMeasured(reason)``. A rate of 0.0 is a
real 0.0 (the seed printed "N/A" for it, hiding a total failure from the gate);
a metric with nothing to measure says so and why, and the gate blocks on it.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from rouge_score import rouge_scorer


@dataclass(frozen=True)
class NotMeasured:
    """A metric that could not be measured; never treated as a pass."""

    reason: str


MetricValue = float | NotMeasured


# One Hangul syllable block (U+AC00..U+D7A3), or a run of Hangul jamo, or any
# other run of letters/digits. Hangul is split into syllables because Korean
# attaches particles and endings to words ("계약서를" / "계약서가"): word-level
# LCS would score those as total mismatches. Syllable-level matching is the
# KorQuAD convention and needs no morphological analyser (none ships offline
# with its model in a pinned wheel here). Latin text stays word-level, as in
# rouge_score's default tokenizer, which drops every non-ASCII character.
_HANGUL_JAMO = "\u1100-\u11ff\u3130-\u318f"
_TOKEN = re.compile(rf"[\uac00-\ud7a3]|[{_HANGUL_JAMO}]+|[^\W_\uac00-\ud7a3{_HANGUL_JAMO}]+")
_CJK_IDEOGRAPH = re.compile(r"[\u4e00-\u9fff]")


class MultilingualTokenizer:
    """rouge_score tokenizer: NFKC, lower-case, Hangul and CJK by character, other scripts by word."""

    def tokenize(self, text: str) -> list[str]:
        normalised = unicodedata.normalize("NFKC", text or "").lower()
        tokens: list[str] = []
        for match in _TOKEN.finditer(normalised):
            word = match.group(0)
            # CJK ideographs inside a word run are split too (Hanja in Korean legal text).
            if _CJK_IDEOGRAPH.search(word):
                tokens.extend(_split_ideographs(word))
            else:
                tokens.append(word)
        return tokens


def _split_ideographs(word: str) -> list[str]:
    return [piece for piece in re.split(r"([\u4e00-\u9fff])", word) if piece]


_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MultilingualTokenizer())


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1 of one prediction against one reference (0.0 when either has no tokens)."""
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def is_json_compliant(text: str) -> bool:
    """The answer parses as a JSON object or array (surrounding whitespace allowed, nothing else).

    A bare number or string also parses as JSON but is not the structured
    answer a `expected_format: json` row asks for, so it fails.
    """
    try:
        parsed = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return False
    return isinstance(parsed, (dict, list))


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)


def is_json_in_fence(text: str) -> bool:
    """Valid JSON bare, or inside a ``` code fence (prose around the fence allowed).

    Reported beside the strict parse: an instruct base that wraps a correct object in
    ```json ... ``` fails the strict metric for the fence, not the content, and a user
    should see which one it is.
    """
    if is_json_compliant(text):
        return True
    return any(is_json_compliant(block) for block in _FENCE.findall(text or ""))


def _fold(text: str) -> str:
    # NFKC + casefold + typographic apostrophes, so "I’m sorry" matches "i'm sorry".
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return folded.replace("\u2019", "'").replace("\u2018", "'")


def is_refusal(text: str, phrases: Sequence[str]) -> bool:
    """True when the answer contains any configured refusal phrase (Korean or English)."""
    folded = _fold(text)
    return any(_fold(phrase) in folded for phrase in phrases if phrase.strip())


def mean_or_not_measured(values: Sequence[float], what: str) -> MetricValue:
    """The mean; an empty sequence is not measured, a list of zeros is 0.0."""
    if len(values) == 0:
        return NotMeasured(f"no {what} in the eval set")
    return float(sum(values) / len(values))


def rate(flags: Iterable[bool], what: str) -> MetricValue:
    """Share of True among flags; 0.0 when none is True, NotMeasured when there are none."""
    values = [1.0 if flag else 0.0 for flag in flags]
    return mean_or_not_measured(values, what)


def latency_percentiles_ms(latencies_s: Sequence[float]) -> dict[str, MetricValue]:
    """p50/p95/p99 of per-request latency in milliseconds (linear interpolation)."""
    names = {"latency_p50_ms": 50, "latency_p95_ms": 95, "latency_p99_ms": 99}
    if len(latencies_s) == 0:
        return {name: NotMeasured("no request completed") for name in names}
    ms = np.asarray(latencies_s, dtype=float) * 1000.0
    return {name: float(np.percentile(ms, q)) for name, q in names.items()}


def output_tokens_per_second(completion_tokens: int, wall_s: float) -> MetricValue:
    """Aggregate generated tokens per wall-clock second of the whole eval run."""
    if wall_s <= 0:
        return NotMeasured("eval run took no measurable time")
    if completion_tokens <= 0:
        # Requests that finished but produced nothing are a real 0 tokens/s.
        return 0.0
    return float(completion_tokens / wall_s)


def is_measured(value: MetricValue | None) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
