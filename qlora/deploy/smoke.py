"""Readiness is a real answer, not /health: golden prompts from the eval set, sent to the new version.

vLLM's /health can say 200 while the engine hangs, so a version is
ready only when it answers the domain's own prompts. An error or an empty
answer always fails; with `smoke_min_similarity` > 0 an answer far from the
expected output counts as a mismatch too, and too many mismatches fail.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from qlora.evaluation.eval_set import EvalCase, load_eval_cases
from qlora.core.paths import paths
from qlora.serving.endpoint import ServingEndpoint


@dataclass(frozen=True)
class GoldenPrompt:
    messages: list[dict[str, str]]
    expected_output: str | None
    source: str


@dataclass
class SmokeResult:
    passed: bool
    answered: int
    failures: list[str] = field(default_factory=list)
    mean_similarity: float | None = None

    @property
    def reason(self) -> str:
        shown = "; ".join(self.failures[:3]) + (" ..." if len(self.failures) > 3 else "")
        return f"smoke test failed: {shown}"


def golden_prompts(domain: str, count: int, eval_file: str | Path | None = None) -> list[GoldenPrompt]:
    """The first `count` non-refusal rows of data/eval/<domain>.jsonl (deterministic, so runs compare)."""
    path = Path(eval_file) if eval_file else paths().eval_dir / f"{domain}.jsonl"
    cases: list[EvalCase] = [c for c in load_eval_cases(path) if not c.should_refuse]
    if not cases:
        raise ValueError(f"{path}: no non-refusal rows to use as golden prompts")
    return [
        GoldenPrompt(messages=[dict(m) for m in c.messages], expected_output=c.expected_output,
                     source=f"{c.source}:{c.line}")
        for c in cases[:count]
    ]


def similarity(answer: str, expected: str) -> float:
    """Character-level ratio: language-neutral, so Korean compares as well as English."""
    return difflib.SequenceMatcher(None, answer.strip(), expected.strip(), autojunk=False).ratio()


def smoke_test(client: ServingEndpoint, served_name: str, prompts: list[GoldenPrompt], max_tokens: int,
               min_similarity: float, max_mismatch_rate: float) -> SmokeResult:
    results = client.chat_many(
        served_name, [p.messages for p in prompts], max_tokens=max_tokens, concurrency=len(prompts)
    )
    failures, scores, mismatches = [], [], 0
    for prompt, result in zip(prompts, results):
        if isinstance(result, Exception):
            failures.append(f"{prompt.source}: error {_describe(result)}")
            continue
        if result.model != served_name:
            failures.append(f"{prompt.source}: answered by {result.model!r}, not {served_name!r}")
            continue
        if not result.text.strip():
            failures.append(f"{prompt.source}: empty answer (finish_reason={result.finish_reason})")
            continue
        if min_similarity > 0 and prompt.expected_output is not None:
            score = similarity(result.text, prompt.expected_output)
            scores.append(score)
            if score < min_similarity:
                mismatches += 1
    mean = sum(scores) / len(scores) if scores else None
    if scores and mismatches / len(scores) > max_mismatch_rate:
        failures.append(
            f"{mismatches}/{len(scores)} answers below similarity {min_similarity} to the expected output "
            f"(mean {mean:.2f}, allowed share {max_mismatch_rate})"
        )
    return SmokeResult(passed=not failures, answered=len(results), failures=failures, mean_similarity=mean)


def _describe(error: Exception) -> str:
    status = getattr(error, "status", None)
    body = str(getattr(error, "body", "") or error)[:200]
    return f"{status} {body}" if status is not None else f"{type(error).__name__}: {body}"
