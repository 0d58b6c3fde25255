"""Eval, gate and deploy follow a new adapter on their own, and a blocked gate stops deploy."""
import dagster as dg
import pytest

from qlora_assets.automation.conditions import FOLLOWS_UPSTREAM, apply_automation_conditions
from tests.support.automation_graph import stand_in_graph

UP_TO_ADAPTER = [dg.AssetKey(k) for k in ("raw_instructions", "cleaned_dataset", "train_eval_split", "qlora_adapter")]


def requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def test_conditions_land_on_the_tail_only():
    graph = apply_automation_conditions(stand_in_graph()).resolve_asset_graph()
    with_condition = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert with_condition == set(FOLLOWS_UPSTREAM)


def test_a_new_adapter_is_evaluated_and_gated_and_deploy_waits_for_the_gate():
    defs = apply_automation_conditions(stand_in_graph())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["legal-ko"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing upstream exists yet

        job = defs.resolve_implicit_global_asset_job_def()
        job.execute_in_process(instance=instance, partition_key="legal-ko", asset_selection=UP_TO_ADAPTER)
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        # deployed_adapter waits: the gate's blocking check has not passed yet (next test).
        assert requested(after) == {"eval_report", "gate_decision"}


@pytest.mark.parametrize("gate_passes", [True, False])
def test_deploy_follows_the_gate_only_when_its_blocking_check_passed(gate_passes):
    defs = apply_automation_conditions(stand_in_graph(gate_passes=gate_passes))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["legal-ko"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        job = defs.resolve_implicit_global_asset_job_def()
        # Someone re-runs the gate by hand; deploy is left to automation.
        job.execute_in_process(
            instance=instance, partition_key="legal-ko", raise_on_error=False,
            asset_selection=[*UP_TO_ADAPTER, dg.AssetKey("eval_report"), dg.AssetKey("gate_decision")],
        )
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert ("deployed_adapter" in requested(after)) is gate_passes


def test_conditions_apply_to_the_real_graph():
    from definitions import defs

    with_conditions = apply_automation_conditions(defs)
    dg.Definitions.validate_loadable(with_conditions)
    graph = with_conditions.resolve_asset_graph()
    # ab_experiment (after a gate pass) and cost_report (after a training) declare their own conditions.
    assert {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition} == set(
        FOLLOWS_UPSTREAM
    ) | {"ab_experiment", "cost_report"}
