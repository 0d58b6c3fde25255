"""A deploy proves what it claims: the adapter's base is the server's, and a version that already holds
the alias answers a real completion (a backend that lost it must not make `deploy` or `rollback --to`
exit 0 and record "deployed")."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import BLOCKED, DEPLOYED, FAILED, deployment_history
from qlora.serving.base_identity import base_fingerprint
from qlora.serving.client import ServingClient
from tests.support.deploy import API_KEY, TEST_CONFIG, home_of_its_own, live_factory, pass_gate, write_config  # noqa: F401
from tests.support.serving import build_adapter

DOMAIN = "legal-ko"


@pytest.fixture(scope="module")
def live(live_factory, serving_base, tmp_path_factory):
    with home_of_its_own(tmp_path_factory, "deploy_verify_home") as warehouse:
        live = live_factory("deploy_verify", {})
        live.warehouse = warehouse  # the CLI reads QLORA_HOME's warehouse
        for version, fingerprint in (("v-other-base", "0123456789abcdef"),
                                     ("v-same-base", base_fingerprint(serving_base)), ("v-gone", None), ("v-no-base", "")):
            folder = build_adapter(serving_base, live.root / DOMAIN / version, seed=40)
            if fingerprint is not None:
                manifest = json.loads((folder / "manifest.json").read_text())
                (folder / "manifest.json").write_text(json.dumps({**manifest, "base": {"fingerprint": fingerprint}}))
            pass_gate(live.warehouse, live.ref(DOMAIN, version))
        pass_gate(live.warehouse, live.ref(DOMAIN, "v1"))
        yield live


def deploy(live, version: str):
    with live.client() as client:
        return Deployer(client, live.warehouse, TEST_CONFIG, live.golden).deploy(live.ref(DOMAIN, version))


def test_an_adapter_of_another_base_is_refused_naming_both(live, serving_base):
    record = deploy(live, "v-other-base")
    assert record.result == BLOCKED
    assert "0123456789abcdef" in record.reason and base_fingerprint(serving_base) in record.reason
    assert serving_base.name in record.reason and "legal-ko@v-other-base" not in live.loaded()


def test_an_adapter_whose_manifest_names_no_base_is_refused_as_eval_refuses_it(live):
    record = deploy(live, "v-no-base")
    assert record.result == BLOCKED
    assert "fingerprint missing" in record.reason and "legal-ko@v-no-base" not in live.loaded()


def test_the_same_base_passes_the_check_and_serves(live):
    record = deploy(live, "v-same-base")
    assert record.result == DEPLOYED, record.reason
    assert "matches" in next(s for s in record.steps if s["step"] == "base")["detail"]
    assert live.alias_answer(DOMAIN) == "legal-ko@v-same-base"


def test_redeploying_the_serving_version_is_verified_by_a_real_answer(live):
    assert deploy(live, "v1").result == DEPLOYED
    again = deploy(live, "v1")
    assert again.result == DEPLOYED and "answered" in again.reason
    assert [s["step"] for s in again.steps] == ["inspect", "base", "ensure_loaded", "verify"]


def test_a_lost_alias_is_put_back_from_the_deployment_history_before_the_next_deploy(live):
    with live.client() as client:
        assert client.alias_state(DOMAIN).serving == "legal-ko@v1"
        client.delete_alias(DOMAIN)  # as if the router's alias files had been lost
    record = deploy(live, "v-same-base")
    assert record.result == DEPLOYED and record.previous_version == "v1", record.reason
    restore = next(s for s in record.steps if s["step"] == "restore_alias")
    assert "legal-ko@v1" in restore["detail"] and "put back" in restore["detail"]


def test_a_serving_version_the_backend_lost_and_cannot_reload_fails_the_deploy(live):
    assert deploy(live, "v-gone").result == DEPLOYED
    with ServingClient(live.handle.backend_url, api_key=API_KEY) as backend:
        backend.unload_adapter("legal-ko@v-gone")  # the backend restarted, and the weights are gone too
    (live.root / DOMAIN / "v-gone" / "adapter_model.safetensors").unlink()  # its manifest stays: the base check passes
    result = CliRunner().invoke(app, ["deploy", "--domain", DOMAIN, "--adapter", str(live.root / DOMAIN / "v-gone"),
                                      "--server", live.handle.url, "--api-key", API_KEY,
                                      "--eval-data", str(live.eval_file),
                                      "--config", str(write_config(live.eval_file.parent))])
    assert result.exit_code == 3, result.output
    latest = deployment_history(live.warehouse, DOMAIN, limit=1).iloc[0]
    assert latest["result"] == FAILED and "does not answer" in latest["reason"]
