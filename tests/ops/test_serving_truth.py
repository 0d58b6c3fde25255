"""What the UI records as serving follows the router, including moves made outside Dagster."""
from __future__ import annotations

import dagster as dg
import pytest

from qlora.ops.serving_truth import NOT_DEPLOYED, SERVING, UNREACHABLE, observe_alias, observe_aliases
from qlora.serving.client import ServingClient
from qlora_assets.automation.serving_sensor import serving_observation_sensor
from resources.serving import VllmServingResource
from tests.ops.conftest import API_KEY


def test_observe_alias_reads_versions_and_weights_largest_first(alias_router):
    alias_router.move("legal-ko", {"legal-ko@v2": 0.1, "legal-ko@v3": 0.9})
    with ServingClient(alias_router.url, api_key=API_KEY) as client:
        state = observe_alias(client, "legal-ko")
        assert (state.status, list(state.weights), state.primary_version) == (SERVING, ["v3", "v2"], "v3")
        assert state.describe() == "v3 (90%) + v2 (10%)"
        assert observe_alias(client, "medical-ko").status == NOT_DEPLOYED
    with ServingClient("http://127.0.0.1:9", api_key=API_KEY, timeout_s=2) as down:
        assert observe_alias(down, "legal-ko").status == UNREACHABLE
    assert observe_aliases(None, ["legal-ko"])["legal-ko"].status == UNREACHABLE


@pytest.fixture()
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["legal-ko", "medical-ko"])
        yield instance


def tick(instance, url, cursor=None):
    serving = VllmServingResource(url=url, api_key_env="OPS_TEST_KEY")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"serving": serving})
    return serving_observation_sensor.evaluate_tick(context)


def observed(result) -> dict[str, str]:
    return {e.partition: e.metadata["serving"].value for e in result.asset_events}


def test_sensor_records_each_domain_then_only_what_moved(alias_router, instance, monkeypatch):
    monkeypatch.setenv("OPS_TEST_KEY", API_KEY)
    first = tick(instance, alias_router.url)
    assert observed(first) == {"legal-ko": "v2 (100%)", "medical-ko": "not deployed"}
    assert all(e.asset_key == dg.AssetKey("deployed_adapter") for e in first.asset_events)

    assert tick(instance, alias_router.url, first.cursor).asset_events == []

    # A `qlora rollback` outside Dagster: the next tick records v1, for that domain only.
    alias_router.move("legal-ko", {"legal-ko@v1": 1.0})
    moved = tick(instance, alias_router.url, first.cursor)
    [event] = moved.asset_events
    assert (event.partition, event.metadata["serving_version"].value) == ("legal-ko", "v1")
    assert "| legal-ko@v1 | 100% |" in event.metadata["serving_table"].value
