"""Every query of the Grafana dashboard returns data from a real Prometheus scraping the router.

Debian's prometheus runs on loopback with a temp config (1 s scrapes) against the embedded
router's /metrics and the GPU stand-in exporter; traffic goes to two adapters, one of which
also gets bad requests, and each panel's PromQL is then asked of Prometheus's HTTP API.
"""
from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from qlora.automation.gpu_exporter import start_gpu_exporter
from qlora.serving.client import ServingClient, ServingError
from qlora.serving.config import EmbeddedConfig
from qlora.serving.embedded import start_embedded
from tests.support.system_deps import require_binaries

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "qlora.json"
SCRAPE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
ADAPTERS = {"legal-ko": "legal-ko@v1", "cs-support": "cs-support@v1"}
# Grafana fills these in; Prometheus needs literal values. 30 s spans the whole test's traffic.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$adapter": ".*"}
# An A/B on a third alias: two versions, sticky arms, pairwise and thumbs feedback.
AB_ALIAS, AB_CONTROL, AB_CANDIDATE = "medical-ko", "medical-ko@v1", "medical-ko@v2"


def shipped_config(targets: dict[str, str]) -> dict:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[job["job_name"]]]
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def panel_queries() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = {}
    for panel in dashboard["panels"]:
        exprs = []
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            exprs.append(expr)
        queries[panel["title"]] = exprs
    return queries


@pytest.fixture(scope="module")
def router(serving_base, serving_adapters, tmp_path_factory):
    handle = start_embedded(serving_base, state_dir=tmp_path_factory.mktemp("router_state"),
                            config=EmbeddedConfig(quantization="none", default_max_tokens=8))
    client = ServingClient(handle.url, handle.api_key)
    for public, versioned in ADAPTERS.items():
        client.load_adapter(versioned, str(serving_adapters[public]))
        client.set_alias(public, {versioned: 1.0})
    client.load_adapter(AB_CONTROL, str(serving_adapters["medical-ko"]))
    client.load_adapter(AB_CANDIDATE, str(serving_adapters["cs-support"]))
    client.set_alias(AB_ALIAS, {AB_CONTROL: 0.5, AB_CANDIDATE: 0.5})
    httpx.put(f"{handle.url}/admin/experiments/{AB_ALIAS}", headers={"Authorization": f"Bearer {handle.api_key}"},
              json={"experiment_id": "dash", "control": AB_CONTROL, "candidate": AB_CANDIDATE}).raise_for_status()
    yield client
    client.close()
    handle.stop()


@pytest.fixture(scope="module")
def prometheus(router, tmp_path_factory):
    binary = require_binaries("prometheus")["prometheus"]
    exporter, _, gpu_port = start_gpu_exporter()
    work = tmp_path_factory.mktemp("prometheus")
    router_target = router.base_url.removeprefix("http://")
    # The shipped scrape config, with this test's ports as targets (and 1 s scrapes).
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped_config({"qlora-router": router_target, "gpu": f"127.0.0.1:{gpu_port}"})))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_for(lambda: _ready(api), 60, f"prometheus not ready; log: {work / 'prometheus.log'}")
        yield api
    finally:
        api.close()
        process.terminate()
        process.wait(timeout=30)
        exporter.shutdown()
        log.close()


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s: {what}")


def query(api: httpx.Client, promql: str) -> list[dict]:
    body = api.get("/api/v1/query", params={"query": promql}).json()
    assert body["status"] == "success", f"{promql}: {body}"
    return body["data"]["result"]


def scraped_total(api: httpx.Client, counter: str) -> float:
    return sum(float(r["value"][1]) for r in query(api, counter))


# Each A/B user posts one pair (a win and a loss) and one thumbs rating: three feedback counts.
FEEDBACK_PER_AB_USER, AB_USERS = 3, 4


def send_round(router: ServingClient) -> int:
    """Two good requests per adapter through its public alias, and one bad one to legal-ko."""
    sent = 0
    for public in ADAPTERS:
        for answer in router.chat_many(public, [[{"role": "user", "content": f"hello {i}"}] for i in range(2)],
                                       max_tokens=6):
            assert not isinstance(answer, ServingError), answer
            sent += 1
    with pytest.raises(ServingError):
        router.chat("legal-ko", [{"role": "user", "content": "x"}], max_tokens=-1)
    return sent + 1 + send_ab_round(router)


def send_ab_round(router: ServingClient) -> int:
    """Four users side by side (the candidate wins 3 of 4 pairs) and a thumbs up and down."""
    url, sent = router.base_url, 0
    for user in range(AB_USERS):
        body = {"model": AB_ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "user": f"u{user}"}
        first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        second = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60,
                            headers={"X-QLora-Pair-Of": first["id"]}).json()
        by_version = {first["model"]: first["id"], second["model"]: second["id"]}
        winner = by_version[AB_CANDIDATE if user < 3 else AB_CONTROL]
        assert httpx.post(f"{url}/v1/feedback", json={"pair": [first["id"], second["id"]], "preferred": winner},
                          timeout=30).status_code == 200
        rating = "up" if user % 2 else "down"
        assert httpx.post(f"{url}/v1/feedback", json={"response_id": first["id"], "rating": rating},
                          timeout=30).status_code == 200
        sent += 2
    return sent


@pytest.fixture(scope="module")
def traffic(router, prometheus):
    # Two rounds with a scrape between them, so every counter has grown inside rate()'s window.
    # Feedback is posted after its requests: a scrape can hold them all and not the last feedback.
    total, feedback = 0, 0
    for _ in range(2):
        total += send_round(router)
        feedback += FEEDBACK_PER_AB_USER * AB_USERS
        wait_for(lambda: scraped_total(prometheus, "llm_request_total") >= total
                 and scraped_total(prometheus, "llm_feedback_total") >= feedback,
                 60, f"{total} requests and {feedback} feedback counts scraped")
    return total


def test_every_panel_query_returns_data(prometheus, traffic):
    queries = panel_queries()
    assert len(queries) == 7  # the seed's five, A/B feedback per arm, what each alias serves
    for title, exprs in queries.items():
        for expr in exprs:
            assert query(prometheus, expr), f"panel {title!r}: no data for {expr}"


def values_by(result: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_latency_and_throughput_are_per_adapter(prometheus, traffic):
    latency, throughput = panel_queries()["P50/P95/P99 latency by adapter"], panel_queries()["Throughput (tokens/s) by adapter"]
    for expr in latency:
        by_adapter = values_by(query(prometheus, expr), "adapter")
        assert set(ADAPTERS.values()) <= set(by_adapter), expr
        assert all(0 < by_adapter[a] <= 10 for a in ADAPTERS.values()), by_adapter
    tokens = values_by(query(prometheus, throughput[0]), "adapter")
    assert all(tokens[a] > 0 for a in ADAPTERS.values()), tokens


def test_error_rate_shows_the_failing_adapter_and_zero_for_the_other(prometheus, traffic):
    [expr] = panel_queries()["Error rate by adapter"]
    rates = values_by(query(prometheus, expr), "adapter")
    assert 0 < rates["legal-ko@v1"] < 1 and rates["cs-support@v1"] == 0, rates


def test_gpu_panel_reads_dcgm_names(prometheus, traffic):
    utilisation, memory = panel_queries()["GPU utilisation and memory"]
    for expr in (utilisation, memory):
        series = query(prometheus, expr)
        for one in series:
            device, value = one["metric"]["device"], float(one["value"][1])
            if device == "cpu":  # no GPU here: an honest 0, labelled as such
                assert value == 0 and len(series) == 1, series
            else:
                assert device.startswith("nvidia") and (math.isnan(value) or value >= 0), series


def test_version_timeline_names_each_adapter_version_and_train_date(prometheus, traffic):
    [expr] = panel_queries()["Adapter version timeline"]
    loaded = {(r["metric"]["adapter"], r["metric"]["version"], r["metric"]["train_date"]) for r in query(prometheus, expr)}
    assert loaded >= {("legal-ko", "v1", "2026-01-05"), ("cs-support", "v1", "2026-01-05")}, loaded


def test_ab_panel_shows_win_rate_feedback_and_requests_per_arm(prometheus, traffic):
    win_rate, ratings, per_arm = panel_queries()["A/B: win rate and feedback per arm"]
    rates = values_by(query(prometheus, win_rate), "adapter")
    assert rates[AB_CANDIDATE] == pytest.approx(0.75) and rates[AB_CONTROL] == pytest.approx(0.25), rates
    seen = {(r["metric"]["adapter"], r["metric"]["rating"]) for r in query(prometheus, ratings)}
    assert {rating for _, rating in seen} == {"up", "down"}, seen
    arms = {r["metric"]["arm"] for r in query(prometheus, per_arm)}
    assert arms == {"control", "candidate"}, arms


def alias_shares(api: httpx.Client) -> dict[tuple[str, str], float]:
    [expr] = panel_queries()["What each alias serves"]
    return {(r["metric"]["alias"], r["metric"]["version"]): float(r["value"][1]) for r in query(api, expr)}


def test_alias_panel_shows_a_canary_split_and_the_rollback(router, prometheus, traffic, serving_adapters):
    assert alias_shares(prometheus)[("legal-ko", "v1")] == 1.0
    router.load_adapter("legal-ko@v2", str(serving_adapters["medical-ko"]))
    router.set_alias("legal-ko", {"legal-ko@v1": 0.9, "legal-ko@v2": 0.1})
    split = wait_for(lambda: (s := alias_shares(prometheus)).get(("legal-ko", "v2")) and s, 30, "canary scraped")
    assert split[("legal-ko", "v1")] == pytest.approx(0.9) and split[("legal-ko", "v2")] == pytest.approx(0.1)

    router.set_alias("legal-ko", {"legal-ko@v1": 1.0})  # the rollback: v2's series ends
    after = wait_for(lambda: ("legal-ko", "v2") not in (s := alias_shares(prometheus)) and s, 30, "rollback scraped")
    assert after[("legal-ko", "v1")] == 1.0 and after[("cs-support", "v1")] == 1.0
