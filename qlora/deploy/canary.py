"""One canary step: send probes, read the router's counters, and judge the new version.

Two sources, because each alone can miss: our probes through the alias show
which version answers and how fast (answers carry the versioned name), and
direct probes make sure a 10% step still exercises the new version; the
router's `llm_request_total{adapter,status}` adds the real traffic the new
version served during the step, which no probe can see.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

from qlora.serving.endpoint import ServingEndpoint

OK_STATUSES = {"success", "ok", "200"}


@dataclass
class StepReport:
    weight: float
    alias_answers: dict[str, int]     # versioned name -> answers through the alias
    new_requests: int
    new_errors: int
    alias_errors: int
    new_latency_p95_ms: float | None
    router_requests: int
    router_errors: int
    problem: str = ""

    @property
    def error_rate(self) -> float:
        total = self.new_requests + self.router_requests
        return (self.new_errors + self.router_errors) / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "error_rate": round(self.error_rate, 4)}


def request_counts(client: ServingEndpoint) -> dict[tuple[str, str], float]:
    """(adapter, status) -> count, from the router's JSON request counts."""
    return {(adapter, status): float(n) for adapter, by_status in client.request_counts().items()
            for status, n in by_status.items()}


def router_delta(before: dict, after: dict, served_name: str) -> tuple[int, int]:
    """Requests and errors the router recorded for `served_name` between two scrapes."""
    requests = errors = 0
    for (adapter, status), value in after.items():
        if adapter != served_name:
            continue
        delta = int(round(value - before.get((adapter, status), 0.0)))
        requests += delta
        if status.lower() not in OK_STATUSES:
            errors += delta
    return requests, errors


def p95_ms(latencies_s: list[float]) -> float | None:
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)
    return 1000 * ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def run_step(client: ServingEndpoint, public_name: str, served_name: str, allowed: set[str], weight: float,
             conversations: list, config, metrics_before: dict | None) -> StepReport:
    """Probe the alias and the new version once the alias has moved to `weight`."""
    convs = list(itertools.islice(itertools.cycle(conversations), config.probes_per_step))
    direct = list(itertools.islice(itertools.cycle(conversations), config.direct_probes_per_step))
    through_alias = client.chat_many(public_name, convs, max_tokens=config.golden_max_tokens,
                                     concurrency=len(convs))
    straight = client.chat_many(served_name, direct, max_tokens=config.golden_max_tokens,
                                concurrency=max(1, len(direct))) if direct else []
    answers: dict[str, int] = {}
    latencies, alias_errors, new_errors, new_requests = [], 0, 0, len(straight)
    unexpected = set()
    for result in through_alias:
        if isinstance(result, Exception):
            # Unattributed: count it against the new version, the only thing that changed.
            alias_errors += 1
            continue
        answers[result.model] = answers.get(result.model, 0) + 1
        if result.model not in allowed:
            unexpected.add(result.model)
        if result.model == served_name:
            new_requests += 1
            latencies.append(result.latency_s)
    for result in straight:
        if isinstance(result, Exception):
            new_errors += 1
        else:
            latencies.append(result.latency_s)
    unreachable = sum(getattr(r, "status", None) == 0 for r in [*through_alias, *straight])
    if unreachable:
        # The client reports a refused connection as status 0: the server went away, not the adapter.
        raise ConnectionError(f"server unreachable during the probes at {weight:.0%} "
                              f"({unreachable} of {len(through_alias) + len(straight)} requests got no HTTP answer)")
    router_requests = router_errors = 0
    if metrics_before is not None:
        router_requests, router_errors = router_delta(metrics_before, request_counts(client),
                                                      served_name)
        # Our own probes are in the router's counts too; keep only the traffic they did not make.
        router_requests = max(0, router_requests - new_requests - alias_errors)
        router_errors = max(0, router_errors - new_errors - alias_errors)
    report = StepReport(weight, answers, new_requests + alias_errors, new_errors + alias_errors, alias_errors,
                        p95_ms(latencies), router_requests, router_errors)
    report.problem = _judge(report, config, unexpected, served_name, weight)
    return report


def _judge(report: StepReport, config, unexpected: set[str], served_name: str, weight: float) -> str:
    if unexpected:
        return f"alias answered by unexpected version(s) {sorted(unexpected)}"
    if weight >= 1.0 and set(report.alias_answers) - {served_name}:
        return f"alias at 100% still answered by {sorted(set(report.alias_answers) - {served_name})}"
    if report.error_rate > config.max_error_rate:
        return (f"error rate {report.error_rate:.1%} of the new version at {weight:.0%} exceeds "
                f"{config.max_error_rate:.1%} ({report.new_errors + report.router_errors} of "
                f"{report.new_requests + report.router_requests} requests failed)")
    if report.new_latency_p95_ms is not None and report.new_latency_p95_ms > config.max_latency_p95_ms:
        return (f"p95 latency {report.new_latency_p95_ms:.0f} ms of the new version at {weight:.0%} exceeds "
                f"{config.max_latency_p95_ms:.0f} ms")
    return ""
