"""The training-data and config-change sensors, evaluated tick by tick on temp folders."""
from __future__ import annotations

import json
import os
import shutil
import time

import dagster as dg
import pytest

from qlora_assets.automation.sensors import config_change_sensor, training_data_sensor
from resources.trainer import trainer_on_this_host
from tests.support.automation_graph import stand_in_graph

GRAPH = stand_in_graph()


@pytest.fixture()
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "training" / "legal-ko").mkdir(parents=True)
    (root / "training" / "legal-ko" / "part1.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (root / "eval").mkdir()
    monkeypatch.setenv("QLORA_DATA_DIR", str(root))
    return root


def tick(sensor, instance, cursor=None):
    # The trainer nests its Pipes client as a resource, so the context is opened as a context manager.
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=GRAPH,
                                 resources={"trainer": trainer_on_this_host()}) as context:
        return sensor.evaluate_tick(context)


def with_base_model(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization("base_model"))
    return instance


def requested(result) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


def test_first_tick_builds_the_base_model_and_keeps_domains_pending(instance, data_dir):
    result = tick(training_data_sensor, instance)
    assert [r.job_name for r in result.run_requests] == ["build_base_model"]
    assert result.cursor is None
    added = result.dynamic_partitions_requests[0]
    assert added.partitions_def_name == "domain" and list(added.partition_keys) == ["legal-ko"]


def test_new_file_retrains_its_domain_once(instance, data_dir):
    with_base_model(instance)
    first = tick(training_data_sensor, instance)
    [request] = first.run_requests
    assert request.job_name == "retrain_domain" and request.partition_key == "legal-ko"
    fingerprint = json.loads(first.cursor)["legal-ko"]
    assert request.run_key == f"legal-ko:{fingerprint}"

    assert tick(training_data_sensor, instance, first.cursor).run_requests == []

    (data_dir / "training" / "legal-ko" / "part2.json").write_text('[{"instruction": "c", "output": "d"}]')
    second = tick(training_data_sensor, instance, first.cursor)
    assert list(requested(second)) == ["legal-ko"]
    assert json.loads(second.cursor)["legal-ko"] != fingerprint


def test_changed_content_retrains_but_same_content_rewritten_does_not(instance, data_dir):
    with_base_model(instance)
    cursor = tick(training_data_sensor, instance).cursor
    source = data_dir / "training" / "legal-ko" / "part1.jsonl"
    original = source.read_bytes()

    source.unlink()
    source.write_bytes(original)  # a new inode and mtime, the same bytes
    shutil.copystat(__file__, source)
    assert tick(training_data_sensor, instance, cursor).run_requests == []

    source.write_bytes(original.replace(b'"b"', b'"B"'))
    changed = tick(training_data_sensor, instance, cursor)
    assert list(requested(changed)) == ["legal-ko"]
    assert requested(changed)["legal-ko"] != f"legal-ko:{json.loads(cursor)['legal-ko']}"


def test_data_reverted_to_earlier_content_retrains_with_a_new_run_key(instance, data_dir):
    with_base_model(instance)
    source = data_dir / "training" / "legal-ko" / "part1.jsonl"
    original = source.read_text()
    first = tick(training_data_sensor, instance)
    source.write_text(original + '{"instruction": "e", "output": "f"}\n')
    edited = tick(training_data_sensor, instance, first.cursor)
    source.write_text(original)
    reverted = tick(training_data_sensor, instance, edited.cursor)
    keys = [requested(result)["legal-ko"] for result in (first, edited, reverted)]
    assert len(set(keys)) == 3, keys
    assert reverted.cursor == first.cursor


def test_eval_set_change_counts_for_its_domain_only(instance, data_dir):
    with_base_model(instance)
    (data_dir / "training" / "cs-support").mkdir()
    (data_dir / "training" / "cs-support" / "a.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    cursor = tick(training_data_sensor, instance).cursor
    (data_dir / "eval" / "cs-support.jsonl").write_text('{"instruction": "q", "expected_output": "r"}\n')
    assert list(requested(tick(training_data_sensor, instance, cursor))) == ["cs-support"]


def test_new_folder_adds_a_partition_and_trains_only_that_domain(instance, data_dir):
    with_base_model(instance)
    instance.add_dynamic_partitions("domain", ["legal-ko"])
    cursor = tick(training_data_sensor, instance).cursor

    (data_dir / "training" / "medical-ko").mkdir()
    (data_dir / "training" / "medical-ko" / "rows.jsonl").write_text('{"instruction": "m", "output": "n"}\n')
    result = tick(training_data_sensor, instance, cursor)
    assert list(requested(result)) == ["medical-ko"]
    [added] = result.dynamic_partitions_requests
    assert list(added.partition_keys) == ["medical-ko"]


def test_first_tick_takes_domains_ingested_after_their_last_change_as_baseline(instance, data_dir):
    with_base_model(instance)
    (data_dir / "training" / "cs-support").mkdir()
    (data_dir / "training" / "cs-support" / "a.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    instance.add_dynamic_partitions("domain", ["legal-ko", "cs-support"])
    # `make demo` ingested both domains; then cs-support's data changed before the sensor was switched on.
    for domain in ("legal-ko", "cs-support"):
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_instructions", partition=domain))
    later = time.time() + 5
    os.utime(data_dir / "training" / "cs-support" / "a.jsonl", (later, later))

    first = tick(training_data_sensor, instance)
    assert list(requested(first)) == ["cs-support"]
    assert set(json.loads(first.cursor)) == {"legal-ko", "cs-support"}


def test_restart_with_saved_cursor_triggers_nothing(instance, data_dir):
    with_base_model(instance)
    cursor = tick(training_data_sensor, instance).cursor
    # A restarted daemon hands the stored cursor to a fresh evaluation.
    with dg.instance_for_test() as restarted:
        with_base_model(restarted)
        result = tick(training_data_sensor, restarted, cursor)
    assert result.run_requests == []
    assert result.cursor == cursor


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    (configs / "qlora").mkdir(parents=True)
    (configs / "qlora" / "tiny-cpu.yaml").write_text("lora:\n  r: 8\n")        # the trainer's profile
    (configs / "qlora" / "llama3-8b.yaml").write_text("lora:\n  r: 64\n")       # a profile nobody uses
    (configs / "quality_gate.yaml").write_text("rouge_l_min: 0.3\n")
    (configs / "quality_gate.demo.yaml").write_text("rouge_l_min: 0.1\n")
    (configs / "schedule.yaml").write_text("weekly_cycle: {cron: '0 3 * * 1'}\n")
    (configs / "domains.yaml").write_text("domains:\n  legal-ko: {max_duplicate_rate: 0.05}\n")
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(configs))
    monkeypatch.setenv("QLORA_QUALITY_GATE", "quality_gate.demo.yaml")
    return configs


def test_config_sensor_retrains_only_for_files_the_domains_runs_use(instance, configs):
    with_base_model(instance).add_dynamic_partitions("domain", ["cs-support", "legal-ko"])
    baseline = tick(config_change_sensor, instance)
    assert baseline.run_requests == []

    # Not read by any run: another profile, the gate file not in use, the schedule.
    (configs / "qlora" / "llama3-8b.yaml").write_text("lora:\n  r: 32\n")
    (configs / "quality_gate.yaml").write_text("rouge_l_min: 0.9\n")
    (configs / "schedule.yaml").write_text("weekly_cycle: {cron: '0 4 * * 1'}\n")
    quiet = tick(config_change_sensor, instance, baseline.cursor)
    assert quiet.run_requests == [] and quiet.cursor == baseline.cursor

    # One domain's entry in domains.yaml: that domain only.
    (configs / "domains.yaml").write_text("domains:\n  legal-ko: {max_duplicate_rate: 0.02}\n")
    one = tick(config_change_sensor, instance, quiet.cursor)
    assert list(requested(one)) == ["legal-ko"]
    assert requested(one)["legal-ko"].startswith("legal-ko:config:")

    # The gate file in use ($QLORA_QUALITY_GATE) and the trainer's profile: every domain.
    (configs / "quality_gate.demo.yaml").write_text("rouge_l_min: 0.2\n")
    gate = tick(config_change_sensor, instance, one.cursor)
    assert sorted(requested(gate)) == ["cs-support", "legal-ko"]
    (configs / "qlora" / "tiny-cpu.yaml").write_text("lora:\n  r: 16\n")
    profile = tick(config_change_sensor, instance, gate.cursor)
    assert sorted(requested(profile)) == ["cs-support", "legal-ko"]
    assert set(requested(profile).values()).isdisjoint(requested(gate).values())  # new run keys each time

    again = tick(config_change_sensor, instance, profile.cursor)
    assert again.run_requests == []


def test_a_domain_added_since_the_last_tick_is_not_a_config_change(instance, configs):
    with_base_model(instance).add_dynamic_partitions("domain", ["legal-ko"])
    baseline = tick(config_change_sensor, instance)
    instance.add_dynamic_partitions("domain", ["new-domain"])
    assert tick(config_change_sensor, instance, baseline.cursor).run_requests == []
