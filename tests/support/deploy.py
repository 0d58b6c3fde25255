"""Shared pieces of the deploy tests (no tests here): a real embedded server + router per test module.

Each deploy test module starts its own server (state dir of its own) because the
fault tests stop and restart it; adapters are the serving fixtures' random LoRAs.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from qlora.core.adapters import AdapterRef, adapter_from_path
from qlora.deploy.config import DeployConfig
from qlora.deploy.smoke import golden_prompts
from qlora.evaluation.decisions import record_gate_decision
from qlora.evaluation.gate import GateDecision, GateVerdict
from qlora.serving.client import ServingClient
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse
from tests.support.serving import DOMAINS, build_adapter

API_KEY = "deploy-test-key"
GOLDEN_ROWS = [
    {"instruction": "The lease may be ended", "expected_output": "with one month of notice."},
    {"instruction": "임대차 계약 해지 통보 기간은?", "expected_output": "한 달입니다."},
    {"instruction": "Refuse this", "should_refuse": True},
    {"instruction": "Your order ships", "expected_output": "within three business days."},
]
# Small probes keep the module fast; the latency bound only has to catch a hung version.
TEST_CONFIG = DeployConfig(canary_steps=(10, 50, 100), probes_per_step=6, direct_probes_per_step=2,
                           golden_prompts=3, golden_max_tokens=6, drain_s=0.2, rollback_timeout_s=60,
                           max_latency_p95_ms=60_000)


def write_eval_set(folder: Path, domain: str) -> Path:
    path = folder / "eval" / f"{domain}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in GOLDEN_ROWS), encoding="utf-8")
    return path


def write_config(folder: Path, config: DeployConfig = TEST_CONFIG) -> Path:
    """The settings as configs/deploy.yaml, for the CLI (--config) and the asset (QLORA_CONFIG_DIR)."""
    import yaml

    path = folder / "deploy.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


def pass_gate(warehouse: Warehouse, ref: AdapterRef, passed: bool = True) -> None:
    verdict = GateVerdict("rouge_l", 0.9 if passed else 0.1, ">= 0.65", "pass" if passed else "block",
                          "" if passed else "rouge_l 0.1 misses >= 0.65")
    record_gate_decision(warehouse, GateDecision(ref.domain, ref.version, [verdict]))


@dataclass
class Live:
    """A running server + router, and what the deploy tests need around it."""
    base: Path
    root: Path
    state_dir: Path
    warehouse: Warehouse
    golden: list
    eval_file: Path
    handle: object = None
    port: int = 0
    adapters: dict = field(default_factory=dict)

    def start(self) -> "Live":
        from qlora.serving.config import EmbeddedConfig, RouterConfig
        from qlora.serving.embedded import start_embedded

        # Re-sync at start only: the fault tests evict versions under the router on purpose.
        config = EmbeddedConfig(max_lora_rank=16, max_batch_size=32, batch_window_ms=5.0,
                                router=RouterConfig(resync_interval_s=3600))
        self.handle = start_embedded(self.base, port=self.port, api_key=API_KEY, state_dir=self.state_dir,
                                     adapters_root=self.root, config=config)
        self.port = int(self.handle.url.rsplit(":", 1)[1])  # a restart binds the same public port
        return self

    def client(self, timeout_s: float = 60.0) -> ServingClient:
        return ServingClient(self.handle.url, api_key=API_KEY, timeout_s=timeout_s)

    def ref(self, domain: str, version: str) -> AdapterRef:
        return adapter_from_path(domain, self.root / domain / version)

    def alias_answer(self, domain: str) -> str:
        with self.client() as client:
            return client.chat(domain, self.golden[0].messages, max_tokens=4).model

    def loaded(self) -> set[str]:
        with self.client() as client:
            return {card["id"] for card in client.models()}


def make_live(tmp_path_factory, serving_base, serving_adapters, qlora_home, name: str,
              extra_versions: dict[str, int]) -> Live:
    """Adapters v1 (from the serving fixtures) plus `extra_versions` {version: seed} for every domain."""
    root = qlora_home / "artifacts" / "adapters"
    work = tmp_path_factory.mktemp(name)
    for i, domain in enumerate(DOMAINS):
        for version, seed in extra_versions.items():
            if not (root / domain / version).exists():
                build_adapter(serving_base, root / domain / version, seed=seed + i)
    eval_file = write_eval_set(work, "legal-ko")
    golden = golden_prompts("legal-ko", TEST_CONFIG.golden_prompts, eval_file)
    live = Live(serving_base, root, work / "serving", Warehouse(work / "warehouse.duckdb"), golden, eval_file)
    return live.start()


@pytest.fixture(scope="module")
def live_factory(tmp_path_factory, serving_base, serving_adapters, qlora_home):
    started = []

    def factory(name: str, extra_versions: dict[str, int]) -> Live:
        started.append(make_live(tmp_path_factory, serving_base, serving_adapters, qlora_home, name, extra_versions))
        return started[-1]

    yield factory
    for live in started:
        live.handle.stop()


@contextmanager
def home_of_its_own(tmp_path_factory, name: str) -> Iterator[Warehouse]:
    """QLORA_HOME for one test module; yields its warehouse (the one the CLI and the asset read).

    The session's warehouse keeps every module's deployment history, and a rollback target or a
    lost alias is restored from that history: a version another module deployed and deleted
    would become this module's target, depending on which modules ran before on this worker."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QLORA_HOME", str(tmp_path_factory.mktemp(name)))
        yield Warehouse(paths().warehouse)
