"""Fault tests on a real embedded server + router: every failed deploy leaves v1 serving, with the reason recorded."""
from __future__ import annotations

import threading
import time

import pytest

from qlora.core.adapters import AdapterRef
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import BLOCKED, DEPLOYED, ROLLED_BACK, deployment_history
from qlora.serving.client import ServingClient
from tests.support.serving import build_adapter
from tests.support.deploy import API_KEY, TEST_CONFIG, live_factory, pass_gate  # noqa: F401 (fixture)

DOMAIN = "legal-ko"
V1 = f"{DOMAIN}@v1"


@pytest.fixture(scope="module")
def live(live_factory, serving_base):
    live = live_factory("deploy_faults", {"v2": 300})
    # An adapter of rank 32: the server here refuses ranks above 16 (vLLM's --max-lora-rank).
    build_adapter(serving_base, live.root / DOMAIN / "v-r32", seed=5, r=32)
    # The manifest survives, the adapter's own files do not: the server's load is what fails.
    (build_adapter(serving_base, live.root / DOMAIN / "v-files-gone", seed=6) / "adapter_config.json").unlink()
    for version in ("v1", "v2", "v-r32", "v-missing", "v-files-gone"):
        pass_gate(live.warehouse, live.ref(DOMAIN, version))
    with live.client() as client:
        record = Deployer(client, live.warehouse, TEST_CONFIG, live.golden).deploy(live.ref(DOMAIN, "v1"))
    assert record.result == DEPLOYED, record.reason
    return live


def deploy(live, ref: AdapterRef, config=TEST_CONFIG, on_step=None, client=None):
    client = client or live.client()
    with client:
        return Deployer(client, live.warehouse, config, live.golden, on_step=on_step).deploy(ref)


def assert_v1_still_serves(live, new_name: str):
    with live.client() as client:
        assert client.get_alias(DOMAIN) == {V1: 1.0}
    assert live.alias_answer(DOMAIN) == V1
    assert new_name not in live.loaded()
    return deployment_history(live.warehouse, DOMAIN, limit=1).iloc[0]


def test_missing_adapter_path_is_blocked_before_anything_moves(live):
    record = deploy(live, live.ref(DOMAIN, "v-missing"))
    assert record.result == BLOCKED
    assert "fingerprint missing" in record.reason and "v-missing/manifest.json" in record.reason
    latest = assert_v1_still_serves(live, "legal-ko@v-missing")
    assert (latest["reason"], latest["result"]) == (record.reason, BLOCKED)


def test_adapter_files_the_server_cannot_load_roll_back(live):
    record = deploy(live, live.ref(DOMAIN, "v-files-gone"))
    assert record.result == ROLLED_BACK
    assert record.reason.startswith("load: server answered 404: Loading lora legal-ko@v-files-gone failed: "
                                    "No adapter found for"), record.reason
    latest = assert_v1_still_serves(live, "legal-ko@v-files-gone")
    assert (latest["reason"], latest["result"], latest["previous_version"]) == (record.reason, ROLLED_BACK, "v1")


def test_rank_above_server_max_rolls_back(live):
    record = deploy(live, live.ref(DOMAIN, "v-r32"))
    assert record.result == ROLLED_BACK
    assert "LoRA rank 32 is greater than max_lora_rank 16" in record.reason
    assert_v1_still_serves(live, "legal-ko@v-r32")


def test_failing_smoke_test_rolls_back_before_any_traffic_moves(live):
    # The random adapter's answers are nothing like the expected outputs: demand near-equality.
    strict = TEST_CONFIG.model_copy(update={"smoke_min_similarity": 0.9, "smoke_max_mismatch_rate": 0.0})
    record = deploy(live, live.ref(DOMAIN, "v2"), config=strict)
    assert record.result == ROLLED_BACK
    assert record.reason.startswith("smoke: smoke test failed:") and "below similarity 0.9" in record.reason
    assert not any(step["step"].startswith("shift") for step in record.steps)
    assert_v1_still_serves(live, "legal-ko@v2")


def test_gate_block_touches_nothing(live, serving_base):
    blocked = live.ref(DOMAIN, "v2")
    pass_gate(live.warehouse, blocked, passed=False)
    try:
        record = deploy(live, blocked)
    finally:
        pass_gate(live.warehouse, blocked)  # the later tests deploy v2 again
    assert record.result == BLOCKED and "rouge_l" in record.reason and record.steps == []
    assert_v1_still_serves(live, "legal-ko@v2")


class EvictAfterAliasMove(ServingClient):
    """The backend drops the new version right after the alias starts sending it traffic (an eviction)."""

    def __init__(self, *args, victim: str, backend_url: str, **kw):
        super().__init__(*args, **kw)
        self.victim, self.backend_url_ = victim, backend_url

    def set_alias(self, public_name, weights):
        super().set_alias(public_name, weights)
        if 0 < weights.get(self.victim, 0) < 1:
            with ServingClient(self.backend_url_, api_key=API_KEY) as backend:
                backend.unload_adapter(self.victim)


def test_canary_error_rate_rise_rolls_back(live):
    client = EvictAfterAliasMove(live.handle.url, api_key=API_KEY, victim="legal-ko@v2",
                                 backend_url=live.handle.backend_url)
    record = deploy(live, live.ref(DOMAIN, "v2"), client=client)
    assert record.result == ROLLED_BACK
    assert record.reason.startswith("shift 10%: error rate") and "exceeds 5.0%" in record.reason
    assert_v1_still_serves(live, "legal-ko@v2")


def test_server_down_mid_canary_rolls_back_once_it_returns(live):
    def crash_and_restart(step):
        if step == "shift 50%":
            live.handle.stop()
            # The server comes back on the same port a moment later (a supervisor restart): the router's
            # alias table survives in its state dir, runtime-loaded adapters do not.
            threading.Thread(target=lambda: (time.sleep(1.0), live.start()), daemon=True).start()

    record = deploy(live, live.ref(DOMAIN, "v2"), on_step=crash_and_restart)
    assert record.result == ROLLED_BACK, record.reason
    assert record.reason.startswith("shift 50%: server unreachable")
    assert "rolled back: legal-ko@v1 serves legal-ko" in record.reason
    assert_v1_still_serves(live, "legal-ko@v2")
