"""The data assets in Dagster: materialise per domain, blocking checks, partition replacement, concurrency."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from qlora_assets.data.assets import cleaned_dataset, raw_instructions, train_eval_split
from qlora.data.export import export_train_jsonl, load_eval_rows
from qlora.core.warehouse import Warehouse
from resources.warehouse import WarehouseResource

REPO = Path(__file__).resolve().parents[2]
ASSETS = [raw_instructions, cleaned_dataset, train_eval_split]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_assets")
    shutil.copytree(REPO / "data", root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QLORA_HOME", str(root / "home"))
        mp.setenv("QLORA_DATA_DIR", str(root / "data"))
        yield root


def materialise(domain: str, selection=ASSETS):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [domain])
        result = dg.materialize(selection, partition_key=domain, instance=instance,
                                resources={"warehouse": WarehouseResource()}, raise_on_error=False)
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        return result.success, checks, done


# Dagster captures stdout per run by redirecting the process's file descriptors, so two runs
# at once must be two processes (as under the multiprocess executor), not two threads.
CONCURRENT_RUN = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.data.test_assets import materialise
ok, checks, done = materialise(sys.argv[1])
sys.exit(0 if ok and all(checks.values()) else 1)
"""


def materialise_in_processes(domains: list[str]) -> list[int]:
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_RUN, d, str(REPO)], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for d in domains]
    return [p.wait(timeout=600) for p in procs]


def warehouse(env) -> Warehouse:
    return Warehouse(env / "home" / "warehouse.duckdb")


def count(env, table: str, domain: str, extra: str = "") -> int:
    return int(warehouse(env).query(f"select count(*) as n from {table} where domain = ? {extra}", [domain])["n"][0])


def test_three_assets_materialise_with_every_check_passing(env):
    ok, checks, done = materialise("legal-ko")
    assert ok and done == {"raw_instructions", "cleaned_dataset", "train_eval_split"}
    assert len(checks) == 9 and all(checks.values()), checks
    raw, kept = count(env, "raw_instructions", "legal-ko"), count(env, "cleaned_dataset", "legal-ko")
    raw_q = count(env, "quarantine", "legal-ko", "and stage = 'raw'")
    clean_q = count(env, "quarantine", "legal-ko", "and stage = 'cleaned'")
    lines = sum(1 for p in (env / "data/training/legal-ko").glob("*.jsonl") for ln in p.read_bytes().split(b"\n") if ln.strip())
    arrays = sum(len(json.loads(p.read_text())) for p in (env / "data/training/legal-ko").glob("*.json"))
    assert raw + raw_q == lines + arrays  # every record of every file is somewhere
    assert raw == kept + clean_q  # accounting: kept + quarantined + duplicates (duplicates are in quarantine)
    assert count(env, "train_eval_split", "legal-ko", "and split = 'eval'") == 30


def test_export_and_eval_rows_for_the_other_areas(env):
    path, version = export_train_jsonl(warehouse(env), "legal-ko")
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == count(env, "train_eval_split", "legal-ko", "and split = 'train'")
    assert lines[0]["messages"][-1]["role"] == "assistant" and version in str(path)
    assert export_train_jsonl(warehouse(env), "legal-ko", env / "again.jsonl")[1] == version  # deterministic
    rows = load_eval_rows(warehouse(env), "legal-ko")
    from_file = load_eval_rows(env / "data", "legal-ko")
    assert len(rows) == len(from_file) == 30
    assert sum(r["should_refuse"] for r in rows) > 0 and sum(r["expected_format"] == "json" for r in rows) > 0
    assert all(r["messages"][-1]["role"] == "user" and r["expected_output"] for r in rows)


@pytest.mark.slow  # two code-location subprocesses materialising at once
def test_two_partitions_at_once_and_rematerialising_replaces_only_its_rows(env):
    assert materialise_in_processes(["medical-ko", "cs-support"]) == [0, 0]
    medical, support = count(env, "cleaned_dataset", "medical-ko"), count(env, "cleaned_dataset", "cs-support")
    assert medical > 200 and support > 200
    (env / "data/training/medical-ko/chat.jsonl").unlink()
    ok, _, _ = materialise("medical-ko")
    assert ok and count(env, "cleaned_dataset", "medical-ko") < medical
    assert count(env, "cleaned_dataset", "cs-support") == support
    assert count(env, "raw_instructions", "medical-ko", "and source_file = 'chat.jsonl'") == 0


def test_planted_bad_data_fails_the_blocking_checks_and_stops_the_split(env):
    folder = env / "data/training/bad-ko"
    folder.mkdir()
    good = [{"instruction": f"다음 법률 용어의 뜻을 일반인도 이해할 수 있게 짧게 설명해 주세요. 번호 {i} 용어: 임대차",
             "output": "임대차는 물건을 빌려주고 그 대가로 차임을 받기로 하는 계약입니다.", "license": "internal"} for i in range(40)]
    rows = good + good[:5]  # 11% duplicates
    rows += [{"instruction": f"Please explain the legal term number {i} in one short and simple sentence.",
              "output": "It is a contract to lend a thing for rent.", "license": "internal"} for i in range(5)]
    rows.append({"instruction": "환불 계좌 110-234-567890 으로 보내 주세요. 처리 방법을 짧게 알려 주세요.",
                 "output": "환불은 주문 내역에서 신청하시면 됩니다.", "license": "internal"})
    (folder / "rows.json").write_text(json.dumps(rows, ensure_ascii=False))
    ok, checks, done = materialise("bad-ko")
    assert not ok
    failed = {name for (_, name), passed in checks.items() if not passed}
    assert failed == {"duplicates", "target_language", "pii_residual"}
    assert "train_eval_split" not in done


def test_a_symlink_in_a_domain_folder_is_quarantined_and_the_raw_check_still_balances(env):
    folder = env / "data/training/linked-ko"
    folder.mkdir()
    shutil.copy(env / "data/training/legal-ko/alpaca.jsonl", folder / "alpaca.jsonl")
    outside = env / "outside.jsonl"
    outside.write_text(json.dumps({"instruction": "OUTSIDE " * 5, "output": "never read"}) + "\n")
    (folder / "outside.jsonl").symlink_to(outside)
    ok, checks, done = materialise("linked-ko", [raw_instructions])
    assert ok and checks == {("raw_instructions", "rows_accounted"): True}
    links = warehouse(env).query("select source_file, line from quarantine where domain = 'linked-ko' "
                                 "and reason = 'symlink_not_followed'")
    assert links.to_dict("records") == [{"source_file": "outside.jsonl", "line": 0}]
    assert count(env, "raw_instructions", "linked-ko", "and messages_json like '%OUTSIDE%'") == 0


def test_a_partition_key_off_the_slug_rule_fails_naming_it(env):
    folder = env / "data/training/Bad_Name"
    folder.mkdir()
    shutil.copy(env / "data/training/legal-ko/alpaca.jsonl", folder / "alpaca.jsonl")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["Bad_Name"])
        result = dg.materialize([raw_instructions], partition_key="Bad_Name", instance=instance,
                                resources={"warehouse": WarehouseResource()}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "'Bad_Name' is not allowed" in str(failure.event_specific_data.error)
    folder.rename(env / "data/training/.bad-name-parked")  # the other tests discover domains here
