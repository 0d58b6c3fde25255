"""The online report of one experiment: per-arm serving numbers, feedback, and the primary metric.

Input is the journal's rows (responses and feedback, as the warehouse holds them); output is
plain numbers, so the decision, the Dagster asset, the CLI and the bench all read the same.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from qlora.ab.assignment import CANDIDATE, CONTROL
from qlora.ab.config import ABConfig
from qlora.ab import stats


@dataclass
class ArmNumbers:
    arm: str
    version: str
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens_per_s: float | None = None
    ratings_up: int = 0
    ratings_down: int = 0
    scores: int = 0
    thumbs_up_rate: float | None = None
    thumbs_up_ci95: tuple[float, float] | None = None
    flagged_prompts: int = 0
    flagged_refusals: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def rated(self) -> int:
        return self.ratings_up + self.ratings_down

    @property
    def refusal_rate(self) -> float | None:
        return self.flagged_refusals / self.flagged_prompts if self.flagged_prompts else None


@dataclass
class OnlineReport:
    experiment_id: str
    metric: str
    arms: dict[str, ArmNumbers]
    pairs: int = 0
    decisive_pairs: int = 0
    candidate_wins: int = 0
    win_rate_ci95: tuple[float, float] | None = None
    estimate: stats.Estimate | None = None
    planned: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def win_rate(self) -> float | None:
        return self.candidate_wins / self.decisive_pairs if self.decisive_pairs else None

    @property
    def progress(self) -> float:
        observed = self.decisive_pairs if self.metric == "win_rate" else min(
            self.arms[CONTROL].rated, self.arms[CANDIDATE].rated)
        return observed / self.planned if self.planned else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["win_rate"], out["progress"] = self.win_rate, self.progress
        for name, arm in self.arms.items():
            out["arms"][name].update(error_rate=arm.error_rate, refusal_rate=arm.refusal_rate)
        return out


def _matches(patterns: list[str], text: str) -> bool:
    return any(re.search(p, text) for p in patterns)


def _prompt_text(prompt_json: str) -> str:
    try:
        prompt = json.loads(prompt_json)
    except (TypeError, json.JSONDecodeError):
        return str(prompt_json)
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def _arm_numbers(arm: str, version: str, rows: pd.DataFrame, ratings: pd.DataFrame, config: ABConfig) -> ArmNumbers:
    numbers = ArmNumbers(arm, version, requests=len(rows))
    if rows.empty:
        return numbers
    ok = rows[rows["status"] == 200]
    # 5xx, timeouts, and 404: the router chose this version, so "not found" means the version went missing.
    numbers.errors = int(((rows["status"] >= 500) | rows["status"].isin([0, 404])).sum())
    if not ok.empty:
        numbers.latency_p50_ms = float(np.percentile(ok["latency_ms"], 50))
        numbers.latency_p95_ms = float(np.percentile(ok["latency_ms"], 95))
        seconds = ok["latency_ms"].sum() / 1000
        numbers.tokens_per_s = float(ok["completion_tokens"].sum() / seconds) if seconds > 0 else None
    guard = config.guardrails
    if guard.flagged_prompt_patterns:
        flagged = ok[ok["prompt_json"].map(lambda p: _matches(guard.flagged_prompt_patterns, _prompt_text(p)))]
        numbers.flagged_prompts = len(flagged)
        phrases = [re.escape(p) for p in guard.refusal_phrases]
        numbers.flagged_refusals = int(flagged["answer"].map(lambda a: _matches(phrases, a)).sum())
    mine = ratings[ratings["response_id"].isin(set(ok["response_id"]))]
    scores = pd.to_numeric(mine["score"], errors="coerce")
    up = (mine["rating"] == "up") | (scores >= config.thumbs_up_min_score)
    numbers.ratings_up, numbers.ratings_down = int(up.sum()), int((~up).sum())
    numbers.scores = int(scores.notna().sum())
    if numbers.rated:
        numbers.thumbs_up_rate = numbers.ratings_up / numbers.rated
        numbers.thumbs_up_ci95 = stats.wilson_interval(numbers.ratings_up, numbers.rated)
    return numbers


def build_report(experiment_id: str, control: str, candidate: str, responses: pd.DataFrame,
                 feedback: pd.DataFrame, config: ABConfig, planned: int) -> OnlineReport:
    """``responses``/``feedback``: journal rows (all experiments; this one is selected here)."""
    rows = responses[responses["experiment_id"] == experiment_id] if not responses.empty else responses
    if rows.empty:
        rows = pd.DataFrame(columns=["response_id", "arm", "status", "latency_ms", "completion_tokens",
                                     "prompt_json", "answer"])
    fb = feedback if not feedback.empty else pd.DataFrame(
        columns=["response_id", "other_response_id", "kind", "rating", "score", "preferred_response_id"])
    fb = fb[fb["response_id"].isin(set(rows["response_id"]))]
    ratings = fb[fb["kind"].isin(["rating", "score"])]
    arms = {arm: _arm_numbers(arm, version, rows[rows["arm"] == arm], ratings, config)
            for arm, version in ((CONTROL, control), (CANDIDATE, candidate))}
    arm_of = dict(zip(rows["response_id"], rows["arm"]))
    pairs = fb[fb["kind"] == "pair"]
    # Only a control answer against a candidate answer says which arm is better.
    across = pairs[pairs.apply(lambda r: {arm_of.get(r["response_id"]), arm_of.get(r["other_response_id"])}
                                         == {CONTROL, CANDIDATE}, axis=1)] if not pairs.empty else pairs
    decisive = across[across["preferred_response_id"] != ""] if not across.empty else across
    wins = int(decisive["preferred_response_id"].map(arm_of).eq(CANDIDATE).sum()) if not decisive.empty else 0
    report = OnlineReport(experiment_id, config.primary_metric, arms, pairs=len(across),
                          decisive_pairs=len(decisive), candidate_wins=wins, planned=planned)
    if report.decisive_pairs:
        report.win_rate_ci95 = stats.wilson_interval(wins, report.decisive_pairs)
    if config.primary_metric == "win_rate":
        report.estimate = stats.win_rate_estimate(wins, report.decisive_pairs)
    else:
        c, k = arms[CONTROL], arms[CANDIDATE]
        report.estimate = stats.two_proportion_estimate(c.ratings_up, c.rated, k.ratings_up, k.rated)
    return report
