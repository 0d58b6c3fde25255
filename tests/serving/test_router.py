"""The router: admin auth, adapter paths under the root, persisted aliases, canary split, metrics."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qlora.serving.aliases import AliasTable
from qlora.serving.client import ServingClient, ServingError

HI = [{"role": "user", "content": "Answer in JSON"}]


@pytest.fixture(scope="module")
def admin(embedded):
    with ServingClient(embedded.url, api_key=embedded.api_key) as client:
        yield client


@pytest.fixture(scope="module")
def two_versions(admin, serving_adapters):
    """cs-support@r1 and @r2: two versions of one domain (different weights, so answers differ)."""
    admin.load_adapter("cs-support@r1", str(serving_adapters["cs-support"]))
    admin.load_adapter("cs-support@r2", str(serving_adapters["medical-ko"]))
    yield "cs-support@r1", "cs-support@r2"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/load_lora_adapter", {"lora_name": "x@1", "lora_path": "legal-ko/v1"}),
    ("POST", "/v1/unload_lora_adapter", {"lora_name": "x@1"}),
    ("PUT", "/admin/aliases/legal-ko", {"weights": {"@v1": 1.0}}),
    ("GET", "/admin/aliases/legal-ko", None),
    ("GET", "/admin/aliases", None),
    ("DELETE", "/admin/aliases/legal-ko", None),
])
def test_admin_routes_need_the_bearer_key(embedded, method, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        response = httpx.request(method, embedded.url + path, json=body, headers=headers)
        assert response.status_code == 401, (path, headers)
    assert "x@1" not in {c["id"] for c in ServingClient(embedded.url).models()}


def test_inference_and_listing_need_no_key(embedded, serving_base):
    anonymous = ServingClient(embedded.url)
    assert anonymous.health()
    assert anonymous.chat(serving_base.name, HI, max_tokens=2).model == serving_base.name


def test_adapter_paths_must_stay_under_the_root(admin, qlora_home, serving_adapters, tmp_path):
    root = qlora_home / "artifacts" / "adapters"
    foreign = tmp_path / "foreign"
    shutil.copytree(serving_adapters["legal-ko"], foreign)  # a real adapter outside the root
    (root / "escape").symlink_to(tmp_path, target_is_directory=True)  # a link inside the root that leads out
    for path in [str(root / "legal-ko" / ".." / "legal-ko" / "v1"), "../../x", str(foreign),
                 str(root / "escape" / "foreign"), "escape/foreign", "/etc"]:
        with pytest.raises(ServingError) as err:
            admin.load_adapter("escape@v1", path)
        assert err.value.status == 403, path
    admin.load_adapter("legal-ko@relative", "legal-ko/v1")  # relative paths resolve under the root
    assert {c["id"]: c["root"] for c in admin.models()}["legal-ko@relative"] == str(serving_adapters["legal-ko"])
    admin.unload_adapter("legal-ko@relative")


def test_alias_moves_and_the_answer_names_the_version(admin, two_versions):
    v1, v2 = two_versions
    admin.set_alias("cs-support", {v1: 1.0})
    assert admin.get_alias("cs-support") == {v1: 1.0}
    assert admin.chat("cs-support", HI, max_tokens=4).model == v1
    admin.set_alias("cs-support", {"@r2": 1.0})  # shorthand for the alias's own versions
    assert admin.chat("cs-support", HI, max_tokens=4).model == v2
    assert admin.chat("cs-support", HI, max_tokens=4).text == admin.chat(v2, HI, max_tokens=4).text


def test_weighted_split_sends_traffic_to_both_versions(admin, two_versions):
    admin.set_alias("cs-support", {"@r1": 0.5, "@r2": 0.5})
    answered = {c.model for c in admin.chat_many("cs-support", [HI] * 24, max_tokens=2, concurrency=8)}
    assert answered == set(two_versions)  # chance of one side only: 2 * 0.5**24


def test_bad_aliases_are_refused(admin, two_versions):
    for weights in [{"legal-ko@v1": 1.0}, {"@nope": 1.0}, {"@r1": 0.0}, {"@r1": -1}, {}, {"@r1": 1, "@r2": 1, "@r3": 1}]:
        with pytest.raises(ServingError) as err:
            admin.set_alias("cs-support", weights)
        assert err.value.status == 400, weights
    with pytest.raises(ServingError) as err:
        admin.get_alias("never-defined")
    assert err.value.status == 404


def test_an_alias_target_cannot_be_unloaded(admin, two_versions):
    admin.set_alias("cs-support", {"@r1": 1.0})
    with pytest.raises(ServingError) as err:
        admin.unload_adapter(two_versions[0])
    assert err.value.status == 409 and "cs-support" in err.value.message


def test_aliases_survive_a_router_restart(admin, embedded, two_versions, qlora_home):
    admin.set_alias("cs-support", {"@r1": 0.9, "@r2": 0.1})
    table_file = embedded.router.aliases.path
    assert not [p for p in table_file.parent.iterdir() if p.name.startswith(".aliases.")]  # no temp files left
    reread = AliasTable(table_file)  # what a restarted router reads
    assert reread.get("cs-support") == pytest.approx({"cs-support@r1": 0.9, "cs-support@r2": 0.1})

    from fastapi.testclient import TestClient

    from qlora.serving.router import Router, create_router_app

    restarted = Router(embedded.backend_url, "k2", AliasTable(table_file), qlora_home / "artifacts" / "adapters")
    with TestClient(create_router_app(restarted)) as client:
        answer = client.get("/admin/aliases/cs-support", headers={"Authorization": "Bearer k2"})
        assert answer.json()["weights"] == pytest.approx({"cs-support@r1": 0.9, "cs-support@r2": 0.1})


def _samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_metrics_have_the_seed_names_and_labels(admin, two_versions, serving_base):
    admin.set_alias("cs-support", {"@r2": 1.0})
    admin.chat("cs-support", HI, max_tokens=2)
    with pytest.raises(ServingError):
        admin.chat("no-such-model", HI, max_tokens=2)
    samples = _samples(admin.metrics_text())

    buckets = {s.labels["le"] for s in samples["llm_inference_duration_seconds_bucket"]}
    assert {"0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"} <= buckets
    latency = [s for s in samples["llm_inference_duration_seconds_count"] if s.labels["adapter"] == two_versions[1]]
    assert latency and latency[0].labels["model"] == serving_base.name
    assert latency[0].labels["request_type"] == "chat" and latency[0].value >= 1

    requests = {(s.labels["adapter"], s.labels["status"]): s.value for s in samples["llm_request_total"]}
    assert requests[(two_versions[1], "success")] >= 1
    assert requests[("unknown_model", "client_error")] >= 1  # client-chosen names never become labels
    assert not [key for key in requests if key[0] == "no-such-model"]

    versions = {(s.labels["adapter"], s.labels["version"]): s.labels["train_date"]
                for s in samples["llm_adapter_version_info"]}
    assert versions[("cs-support", "r1")] == "2026-01-05" and ("cs-support", "r2") in versions


def test_a_restarted_server_loads_its_adapters_again_and_keeps_aliases(serving_base, serving_adapters, qlora_home,
                                                                       tmp_path):
    from qlora.serving.embedded import start_embedded

    def start():
        return start_embedded(serving_base, api_key="k", state_dir=tmp_path / "state",
                              adapters_root=qlora_home / "artifacts" / "adapters")

    with start() as first:
        client = ServingClient(first.url, api_key="k")
        client.load_adapter("legal-ko@v1", str(serving_adapters["legal-ko"]))
        client.set_alias("legal-ko", {"@v1": 1.0})
        before = client.chat("legal-ko", HI, max_tokens=6)
    with start() as second:  # a new process would see the same: a fresh backend, the same state dir
        client = ServingClient(second.url, api_key="k")
        assert "legal-ko@v1" in {c["id"] for c in client.models()}
        after = client.chat("legal-ko", HI, max_tokens=6)
        assert (after.model, after.text) == (before.model, before.text)


def test_errors_of_a_version_chosen_by_an_alias_keep_its_label(admin, embedded, serving_adapters):
    admin.load_adapter("medical-ko@evicted", str(serving_adapters["medical-ko"]))
    admin.set_alias("medical-ko", {"@evicted": 1.0})
    ServingClient(embedded.backend_url, api_key=embedded.api_key).unload_adapter("medical-ko@evicted")  # the backend drops it underneath
    with pytest.raises(ServingError) as err:
        admin.chat("medical-ko", HI, max_tokens=2)
    assert err.value.status == 404
    health = httpx.get(f"{embedded.url}/health")  # an alias that cannot answer makes the router unready
    assert health.status_code == 503 and "medical-ko" in health.json()["unservable_aliases"]
    assert admin.alias_state("medical-ko").servable is False
    requests = {(s.labels["adapter"], s.labels["status"]): s.value
                for s in _samples(admin.metrics_text())["llm_request_total"]}
    assert requests[("medical-ko@evicted", "client_error")] == 1
    assert admin.delete_alias("medical-ko") and not admin.delete_alias("medical-ko")


def test_streaming_through_an_alias_relays_the_versions_events(admin, embedded, two_versions):
    admin.set_alias("cs-support", {"@r1": 1.0})
    body = {"model": "cs-support", "messages": HI, "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{embedded.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and {c["model"] for c in chunks} == {two_versions[0]}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == admin.chat(two_versions[0], HI, max_tokens=6).text


def test_a_plugged_resolver_picks_the_target_before_the_alias_table(admin, embedded, two_versions):
    """The extension point an A/B arm assignment uses: (requested name, request) -> version, or None."""
    admin.set_alias("cs-support", {"@r1": 1.0})
    arm_b = lambda name, request: two_versions[1] if request.headers.get("x-arm") == "b" else None  # noqa: E731
    embedded.router.target_resolvers.append(arm_b)
    try:
        body = {"model": "cs-support", "messages": HI, "max_tokens": 2}
        assert httpx.post(f"{embedded.url}/v1/chat/completions", json=body, headers={"x-arm": "b"}).json()["model"] \
            == two_versions[1]
        assert httpx.post(f"{embedded.url}/v1/chat/completions", json=body).json()["model"] == two_versions[0]
    finally:
        embedded.router.target_resolvers.remove(arm_b)


def test_the_routers_state_comes_back_as_json(admin, two_versions, serving_base):
    from qlora.serving.base_identity import base_fingerprint

    admin.set_alias("cs-support", {"@r1": 0.75, "@r2": 0.25})
    state = admin.alias_state("cs-support")
    assert state.serving == "cs-support@r1" and state.servable
    assert [(v.name, v.version, v.weight, v.loaded) for v in state.versions] == [
        ("cs-support@r1", "r1", 0.75, True), ("cs-support@r2", "r2", 0.25, True)]
    assert admin.alias_state("never-defined") is None and admin.aliases()["cs-support"] == state
    assert admin.versions()["cs-support@r1"] == {"adapter": "cs-support", "version": "r1", "train_date": "2026-01-05"}
    assert admin.base().model == serving_base.name
    assert admin.base().fingerprint == base_fingerprint(serving_base) != ""
    before = admin.request_counts().get("cs-support@r2", {}).get("success", 0)
    admin.chat("cs-support@r2", HI, max_tokens=1)
    assert admin.request_counts()["cs-support@r2"]["success"] == before + 1
    assert admin.in_flight().get("cs-support@r2", 0) == 0
    assert set(admin.state()) == {"base", "aliases", "in_flight", "last_sync"}
