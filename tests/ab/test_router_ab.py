"""A/B on a real embedded server + router: sticky arms, the feedback endpoint, durability across a
router restart, and promote / reject on the decision (reject leaves production as it was)."""
from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qlora.ab import lifecycle
from qlora.ab.config import ABConfig
from qlora.ab.decision import PROMOTE, REJECT
from qlora.ab.guard import promotion_verdict
from qlora.ab.records import decisions, has_promote_decision, running_experiment
from qlora.deploy.deployer import Deployer
from tests.support.deploy import API_KEY, TEST_CONFIG, live_factory, pass_gate  # noqa: F401

DOMAIN = "legal-ko"
HI = [{"role": "user", "content": "The lease may be ended"}]
# A large effect keeps the planned sample small (20 decisive pairs) so the tests stay fast.
CONFIG = ABConfig(minimum_detectable_effect=0.3, guardrails={"min_requests": 5})


@pytest.fixture(scope="module")
def live(live_factory):
    live = live_factory("ab_router", {"v2": 500, "v3": 600})
    for version in ("v1", "v2", "v3"):
        pass_gate(live.warehouse, live.ref(DOMAIN, version))
    with live.client() as client:
        assert Deployer(client, live.warehouse, TEST_CONFIG, live.golden).deploy(live.ref(DOMAIN, "v1")).result == "deployed"
    return live


@pytest.fixture()
def experiment(live):
    with live.client() as client:
        record = lifecycle.start(client, live.warehouse, CONFIG, live.ref(DOMAIN, "v2"))
        yield record
        lifecycle.stop(client, live.warehouse, DOMAIN)


def chat(live, user: str | None = None, headers: dict | None = None, max_tokens: int = 3) -> dict:
    body = {"model": DOMAIN, "messages": HI, "max_tokens": max_tokens}
    if user:
        body["user"] = user
    response = httpx.post(f"{live.handle.url}/v1/chat/completions", json=body, headers=headers or {}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def feedback(live, body: dict) -> httpx.Response:
    return httpx.post(f"{live.handle.url}/v1/feedback", json=body, timeout=30)


def test_arms_are_sticky_per_user_and_split_between_versions(live, experiment):
    served = {f"user-{i}": {chat(live, f"user-{i}")["model"] for _ in range(3)} for i in range(16)}
    assert all(len(versions) == 1 for versions in served.values()), served
    assert {v for versions in served.values() for v in versions} == {experiment.control, experiment.candidate}
    by_header = {chat(live, headers={"X-QLora-User": "tablet-7"})["model"] for _ in range(4)}
    by_address = {chat(live)["model"] for _ in range(4)}
    assert len(by_header) == 1 and len(by_address) == 1


def test_pair_header_asks_the_other_arm(live, experiment):
    first = chat(live, "pair-user")
    second = chat(live, "pair-user", headers={"X-QLora-Pair-Of": first["id"]})
    assert {first["model"], second["model"]} == {experiment.control, experiment.candidate}
    assert feedback(live, {"pair": [first["id"], second["id"]], "preferred": second["id"]}).status_code == 200


def test_feedback_accepts_only_ids_the_router_issued(live, experiment):
    answer = chat(live, "rater")
    assert feedback(live, {"response_id": answer["id"], "rating": "up"}).json()["accepted"]
    assert feedback(live, {"response_id": answer["id"], "score": 4}).status_code == 200
    assert feedback(live, {"response_id": "chatcmpl-made-up", "rating": "up"}).status_code == 404
    for bad in ({"response_id": answer["id"], "rating": "meh"}, {"response_id": answer["id"], "score": 6},
                {"response_id": answer["id"]}, {"response_id": answer["id"], "rating": "up", "score": 3},
                {"pair": [answer["id"], answer["id"]], "preferred": answer["id"]},
                {"pair": [answer["id"], "x"], "preferred": "y"}, {"rating": "up"}):
        assert feedback(live, bad).status_code == 400, bad
    assert httpx.post(f"{live.handle.url}/v1/feedback", content=b"{not json", timeout=30).status_code == 400
    router = live.handle.router
    router.feedback_ttl_s, saved = 0.0, router.feedback_ttl_s
    try:
        assert feedback(live, {"response_id": answer["id"], "rating": "down"}).status_code == 410
    finally:
        router.feedback_ttl_s = saved


def test_a_streamed_answer_is_journaled_and_can_be_rated(live, experiment):
    body = {"model": DOMAIN, "messages": HI, "max_tokens": 3, "stream": True, "user": "streamer"}
    with httpx.stream("POST", f"{live.handle.url}/v1/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    response_id = chunks[0]["id"]
    assert feedback(live, {"response_id": response_id, "rating": "up"}).status_code == 200
    assert chunks[0]["model"] == chat(live, "streamer")["model"]  # the same sticky arm as unstreamed


def test_a_failing_journal_never_fails_the_answer(live, experiment, monkeypatch):
    def disk_full(record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live.handle.router.arm_routing.journal, "record_response", disk_full)
    answer = chat(live, "unlucky")  # still answered
    monkeypatch.undo()
    assert feedback(live, {"response_id": answer["id"], "rating": "up"}).status_code == 404  # never journaled


def test_feedback_and_arm_metrics(live, experiment):
    answer = chat(live, "metric-user")
    feedback(live, {"response_id": answer["id"], "rating": "down"})
    with live.client() as client:
        samples = [s for f in text_string_to_metric_families(client.metrics_text()) for s in f.samples]
    assert any(s.name == "llm_feedback_total" and s.labels == {"adapter": answer["model"], "rating": "down"}
               and s.value >= 1 for s in samples)
    arms = {s.labels.get("arm") for s in samples if s.name == "llm_request_total" and s.labels["adapter"] == answer["model"]}
    assert arms & {"control", "candidate"}


def test_feedback_survives_a_router_restart_and_users_keep_their_arm(live, experiment):
    answers = {f"restart-{i}": chat(live, f"restart-{i}") for i in range(6)}
    for answer in answers.values():
        assert feedback(live, {"response_id": answer["id"], "rating": "up"}).status_code == 200
    live.handle.stop()
    live.start()
    with live.client() as client:
        lifecycle.sync_journal(client, live.warehouse)
    held = live.warehouse.query("select response_id from ab_feedback where kind = 'rating' and rating = 'up'")
    assert {a["id"] for a in answers.values()} <= set(held["response_id"])
    assert {u: chat(live, u)["model"] for u in answers} == {u: a["model"] for u, a in answers.items()}
    assert feedback(live, {"response_id": answers["restart-0"]["id"], "score": 5}).status_code == 200


def test_one_experiment_per_domain(live, experiment):
    with live.client() as client, pytest.raises(lifecycle.ExperimentError, match="one experiment per domain"):
        lifecycle.start(client, live.warehouse, CONFIG, live.ref(DOMAIN, "v3"))


def side_by_side(live, preferred_arm: str, pairs: int, experiment) -> None:
    for i in range(pairs):
        first = chat(live, f"judge-{preferred_arm}-{i}")
        second = chat(live, f"judge-{preferred_arm}-{i}", headers={"X-QLora-Pair-Of": first["id"]})
        by_arm = {first["model"]: first["id"], second["model"]: second["id"]}
        winner = by_arm[experiment.candidate if preferred_arm == "candidate" else experiment.control]
        assert feedback(live, {"pair": [first["id"], second["id"]], "preferred": winner}).status_code == 200


def production_state(live) -> tuple[dict, set, str]:
    with live.client() as client:
        return client.get_alias(DOMAIN), live.loaded(), live.alias_answer(DOMAIN)


def test_reject_on_evidence_leaves_production_untouched(live, experiment):
    side_by_side(live, "control", 20, experiment)
    with live.client() as client:
        result = lifecycle.look(client, live.warehouse, DOMAIN)
    assert result.decision.action == REJECT, result.decision.reason
    alias, loaded, answered_by = production_state(live)
    assert alias == {experiment.control: 1.0} and answered_by == experiment.control
    assert experiment.candidate not in loaded
    assert running_experiment(live.warehouse, DOMAIN) is None
    stored = decisions(live.warehouse, DOMAIN).iloc[0]
    assert stored["action"] == REJECT and json.loads(stored["numbers_json"])["observed"] == 20


def test_guardrail_rejects_a_failing_candidate(live, experiment):
    # The candidate disappears from the backend behind the router's back: its arm answers 404.
    httpx.post(f"{live.handle.backend_url}/v1/unload_lora_adapter", json={"lora_name": experiment.candidate},
               headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).raise_for_status()
    for i in range(30):
        httpx.post(f"{live.handle.url}/v1/chat/completions", timeout=60,
                   json={"model": DOMAIN, "messages": HI, "max_tokens": 2, "user": f"g{i}"})
    with live.client() as client:
        result = lifecycle.look(client, live.warehouse, DOMAIN)
    assert result.decision.action == REJECT and "guardrail" in result.decision.reason, result.decision.reason
    alias, _, answered_by = production_state(live)
    assert alias == {experiment.control: 1.0} and answered_by == experiment.control


@pytest.mark.slow  # a canary deploy / two Dagster runs on a real server: ~30-55 s on 2 shared cores
def test_promote_goes_through_the_canary_and_the_guard_requires_it(live):
    required = CONFIG.model_copy(update={"required_for_domains": [DOMAIN]})
    assert not promotion_verdict(live.warehouse, DOMAIN, "v2", required)[0]
    with live.client() as client:
        experiment = lifecycle.start(client, live.warehouse, CONFIG, live.ref(DOMAIN, "v2"))
        side_by_side(live, "candidate", 20, experiment)
        deployer = Deployer(client, live.warehouse, TEST_CONFIG, live.golden)
        result = lifecycle.look(client, live.warehouse, DOMAIN, deployer=deployer)
    assert result.decision.action == PROMOTE, result.decision.reason
    assert "deployed" in result.outcome, result.outcome
    alias, loaded, answered_by = production_state(live)
    assert alias == {experiment.candidate: 1.0} and answered_by == experiment.candidate
    assert experiment.control not in loaded
    assert has_promote_decision(live.warehouse, DOMAIN, "v2")
    assert promotion_verdict(live.warehouse, DOMAIN, "v2", required)[0]
    assert not promotion_verdict(live.warehouse, DOMAIN, "v3", required)[0]


@pytest.mark.slow  # a canary deploy / two Dagster runs on a real server: ~30-55 s on 2 shared cores
def test_assets_cli_and_sensor_over_the_same_library(live, monkeypatch):
    import dagster as dg
    from typer.testing import CliRunner

    from qlora.cli import app
    from qlora_assets.ab.assets import PROMOTION_CHECK, ab_decision, online_report
    from qlora_assets.ab.sensors import evaluation_requests
    from resources.serving import VllmServingResource
    from resources.warehouse import WarehouseResource

    runner = CliRunner()
    monkeypatch.setattr("qlora.ab.cli._warehouse", lambda: live.warehouse)  # the module's own warehouse file
    monkeypatch.setenv("QLORA_AB_TEST_KEY", API_KEY)
    with live.client() as client:
        current = client.get_alias(DOMAIN)
        control = max(current, key=current.get).split("@", 1)[1]
        candidate = "v3" if control != "v3" else "v2"
        experiment = lifecycle.start(client, live.warehouse, CONFIG, live.ref(DOMAIN, candidate))
    try:
        [request] = evaluation_requests(live.warehouse, 1000.0, 60)
        assert request.partition_key == DOMAIN and request.run_key == f"{experiment.experiment_id}:16"
        assert evaluation_requests(live.warehouse, 1001.0, 60)[0].run_key == request.run_key  # same interval
        status = runner.invoke(app, ["ab", "status", "--domain", DOMAIN])
        assert experiment.experiment_id in status.output
        answer = chat(live, "cli-user")
        sent = runner.invoke(app, ["feedback", answer["id"], "--up", "--server", live.handle.url])
        assert sent.exit_code == 0 and '"accepted":true' in sent.output.replace(" ", "")
        assert runner.invoke(app, ["feedback", "nope", "--up", "--server", live.handle.url]).exit_code == 1
        side_by_side(live, "control", 20, experiment)
        resources = {"serving": VllmServingResource(url=live.handle.url, api_key_env="QLORA_AB_TEST_KEY"),
                     "warehouse": WarehouseResource(path=str(live.warehouse.path))}
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("domain", [DOMAIN])
            result = dg.materialize([online_report, ab_decision], partition_key=DOMAIN, resources=resources,
                                    instance=instance)
        assert result.success
        decided = result.asset_materializations_for_node("ab_decision")[0].metadata
        assert decided["action"].value == REJECT
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == PROMOTION_CHECK and check.passed
        report = result.asset_materializations_for_node("online_report")[0].metadata
        assert "Win rate of the candidate" in report["report"].value
    finally:
        with live.client() as client:
            lifecycle.stop(client, live.warehouse, DOMAIN)
    assert evaluation_requests(live.warehouse, 1000.0, 60) == []


def test_ab_experiment_asset_starts_one_experiment_after_a_gate_pass(live, monkeypatch, tmp_path):
    import dagster as dg
    import pandas as pd
    import yaml

    from qlora_assets.ab.assets import ab_experiment
    from resources.serving import VllmServingResource
    from resources.warehouse import WarehouseResource

    (tmp_path / "ab.yaml").write_text(yaml.safe_dump({**CONFIG.model_dump(mode="json"), "required_for_domains": [DOMAIN]}))
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("QLORA_AB_TEST_KEY", API_KEY)
    with live.client() as client:
        current = client.get_alias(DOMAIN)
    production = max(current, key=current.get)
    newest = "v3" if production != f"{DOMAIN}@v3" else "v2"
    live.warehouse.append("adapters", pd.DataFrame([{"domain": DOMAIN, "version": newest,
                                                     "path": str(live.ref(DOMAIN, newest).path), "manifest_json": "{}",
                                                     "created_at": pd.Timestamp.now(tz="UTC")}]))
    resources = {"serving": VllmServingResource(url=live.handle.url, api_key_env="QLORA_AB_TEST_KEY"),
                 "warehouse": WarehouseResource(path=str(live.warehouse.path))}
    try:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("domain", [DOMAIN])
            first = dg.materialize([ab_experiment], partition_key=DOMAIN, resources=resources, instance=instance)
            again = dg.materialize([ab_experiment], partition_key=DOMAIN, resources=resources, instance=instance)
        started = first.asset_materializations_for_node("ab_experiment")[0].metadata
        assert started["started"].value is True and started["planned_sample"].value == 20
        assert started["control"].value == production and started["candidate"].value == f"{DOMAIN}@{newest}"
        waited = again.asset_materializations_for_node("ab_experiment")[0].metadata
        assert waited["started"].value is False and "still runs" in waited["reason"].value
        # While it runs, the deploy path refuses to move production (the weekly cycle's deploy waits).
        from qlora.deploy.gate_check import gate_verdict

        allowed, why = gate_verdict(live.warehouse, DOMAIN, newest)
        assert not allowed and "runs A/B experiment" in why
    finally:
        with live.client() as client:
            lifecycle.stop(client, live.warehouse, DOMAIN)
