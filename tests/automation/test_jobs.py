"""Jobs, the weekly schedule and its config, on the design card's graph shape."""
from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from qlora_assets.automation.jobs import DOMAIN_ASSETS
from qlora.automation.schedule_config import ConfigError, load_schedule_config
from qlora_assets.automation.schedules import weekly_cycle_schedule
from qlora.core.paths import REPO_ROOT
from tests.support.automation_graph import stand_in_graph

GRAPH = stand_in_graph()
ALL_ASSETS = {"base_model", *DOMAIN_ASSETS}


def job_keys(defs: dg.Definitions, name: str) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_job_def(name).asset_layer.executable_asset_keys}


def test_jobs_select_the_design_cards_assets():
    assert job_keys(GRAPH, "retrain_domain") == set(DOMAIN_ASSETS)
    assert job_keys(GRAPH, "weekly_cycle") == ALL_ASSETS
    assert job_keys(GRAPH, "build_base_model") == {"base_model"}


def test_the_real_graph_gives_every_job_its_assets():
    from definitions import defs

    assert job_keys(defs, "retrain_domain") == set(DOMAIN_ASSETS)
    # The weekly cycle also runs the online A/B (qlora_assets/ab): it starts an experiment after a
    # gate pass, or looks at the running one; it never starts a second one for a domain. It also
    # prices the week's training runs (cost_report).
    assert job_keys(defs, "weekly_cycle") == ALL_ASSETS | {"ab_experiment", "online_report", "ab_decision",
                                                           "ab_feedback_candidates", "cost_report"}
    assert job_keys(defs, "ab_evaluation") == {"online_report", "ab_decision", "ab_feedback_candidates"}


def test_retrain_domain_runs_one_partition_without_rebuilding_the_base():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["legal-ko", "cs-support"])
        result = GRAPH.resolve_job_def("retrain_domain").execute_in_process(instance=instance, partition_key="legal-ko")
        assert result.success
        done = {e.asset_key.to_user_string(): e.partition for e in result.get_asset_materialization_events()
                for e in [e.event_specific_data.materialization]}
        assert done == {name: "legal-ko" for name in DOMAIN_ASSETS}


def test_weekly_schedule_waits_for_the_base_model_then_runs_every_domain():
    monday = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=monday,
                                            repository_def=GRAPH.get_repository_def())
        skipped = weekly_cycle_schedule.evaluate_tick(context)
        assert skipped.run_requests == [] and "base_model" in skipped.skip_message

        instance.report_runless_asset_event(dg.AssetMaterialization("base_model"))
        instance.add_dynamic_partitions("domain", ["cs-support", "legal-ko"])
        requests = weekly_cycle_schedule.evaluate_tick(context).run_requests
        assert [(r.partition_key, r.run_key) for r in requests] == [
            ("cs-support", "weekly:2026-11-30:cs-support"),
            ("legal-ko", "weekly:2026-11-30:legal-ko"),
        ]
        assert {k.to_user_string() for k in requests[0].asset_selection} == set(DOMAIN_ASSETS)

        result = GRAPH.resolve_job_def("weekly_cycle").execute_in_process(
            instance=instance, partition_key="cs-support", asset_selection=requests[0].asset_selection
        )
        assert result.success


def test_schedule_uses_the_committed_config():
    config = load_schedule_config(REPO_ROOT / "configs" / "schedule.yaml")
    assert weekly_cycle_schedule.cron_schedule == config.weekly_cycle.cron == "0 3 * * 1"
    assert weekly_cycle_schedule.execution_timezone == config.weekly_cycle.timezone


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("weekly_cycle: {cron: '0 3 * *'}", "weekly_cycle.cron"),
        ("weekly_cycle: {timezone: 'Mars/Olympus'}", "weekly_cycle.timezone"),
        ("sensors: {training_data: {interval_seconds: 1}}", "sensors.training_data.interval_seconds"),
        ("weekly_cycle: {crn: '0 3 * * 1'}", "weekly_cycle.crn"),
    ],
)
def test_bad_schedule_config_names_file_and_field(tmp_path, text, named):
    path = tmp_path / "schedule.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_schedule_config(path)
    assert str(path) in str(error.value) and named in str(error.value)
