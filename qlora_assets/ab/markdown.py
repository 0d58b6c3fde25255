"""The online report as markdown for the Dagster UI (plain functions, no dagster import)."""
from __future__ import annotations

from qlora.ab.report import OnlineReport


def _fmt(value, pattern: str = "{:.1f}") -> str:
    return "—" if value is None else pattern.format(value)


def _interval(ci) -> str:
    return "—" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def report_markdown(report: OnlineReport) -> str:
    lines = ["| arm | version | requests | error rate | p50 ms | p95 ms | tokens/s | up | down | thumbs-up (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in report.arms.values():
        rate = "—" if arm.thumbs_up_rate is None else f"{arm.thumbs_up_rate:.3f} {_interval(arm.thumbs_up_ci95)}"
        lines.append(f"| {arm.arm} | {arm.version} | {arm.requests} | {arm.error_rate:.2%} | {_fmt(arm.latency_p50_ms)} "
                     f"| {_fmt(arm.latency_p95_ms)} | {_fmt(arm.tokens_per_s)} | {arm.ratings_up} | {arm.ratings_down} "
                     f"| {rate} |")
    win = "—" if report.win_rate is None else f"{report.win_rate:.3f} {_interval(report.win_rate_ci95)}"
    lines += ["", f"**Win rate of the candidate** ({report.decisive_pairs} decisive of {report.pairs} pairs): {win}",
              f"**Progress** ({report.metric}): {report.progress:.0%} of {report.planned} planned"]
    return "\n".join(lines)
