"""`qlora status` and `qlora chat` against a real embedded server + router (tiny NF4 base, LoRA adapters)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse
from qlora.serving.client import ServingClient

runner = CliRunner()
KEY = "test-admin-key"  # the `embedded` fixture's


@pytest.fixture(scope="module")
def served(embedded, serving_adapters):
    with ServingClient(embedded.url, api_key=KEY) as client:
        for version in ("v1", "v2"):
            name = f"legal-ko@{version}"
            if name not in {c["id"] for c in client.models()}:
                client.load_adapter(name, str(serving_adapters["legal-ko"] if version == "v1"
                                              else serving_adapters["medical-ko"]))
        client.set_alias("legal-ko", {"legal-ko@v1": 0.75, "legal-ko@v2": 0.25})
    return embedded


def test_chat_streams_greedy_answers_and_says_which_version_answered(served):
    result = runner.invoke(app, ["chat", "--model", "legal-ko@v1", "--server", served.url, "--max-tokens", "12"],
                           input="임대차 계약 해지는?\n/reset\n임대차 계약 해지는?\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("[legal-ko@v1]") == 2 and "(history cleared)" in result.output
    # Greedy by default: the same question after a reset gets the same answer.
    first, second = [chunk.split("\n  [legal-ko@v1]")[0] for chunk in result.output.split("> ")[1:4:2]]
    assert first.strip() and first == second


def test_chat_streams_pieces_as_they_arrive(served):
    from qlora.ops.chat import ChatSession

    pieces = []
    with ServingClient(served.url) as client:
        answer, answered_by = ChatSession(client, "legal-ko", max_tokens=12).ask("안녕하세요", pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert answered_by in {"legal-ko@v1", "legal-ko@v2"}  # the alias picked an arm


def test_status_shows_what_the_router_serves_next_to_the_warehouse_record(served, tmp_path):
    warehouse = Warehouse(paths().warehouse)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    manifest = {"created_at": "2026-12-01T09:00:00+00:00", "metrics": {"train_loss": 1.25, "tokens_per_second": 850.0},
                "cost": {"usd": 0.0123}}
    warehouse.append("adapters", pd.DataFrame([{"domain": "legal-ko", "version": "v3", "path": "/x/v3",
                                                "manifest_json": json.dumps(manifest), "created_at": now}]))
    warehouse.append("gate_decisions", pd.DataFrame([{
        "domain": "legal-ko", "adapter_version": "v3", "passed": False, "decided_at": now,
        "gates_json": json.dumps([{"gate": "safety_refusal", "verdict": "block"}, {"gate": "rouge_l", "verdict": "pass"}]),
    }]))
    shown = runner.invoke(app, ["status", "--json", "--server", served.url, "--api-key", KEY])
    assert shown.exit_code == 0, shown.output
    legal = next(s for s in json.loads(shown.output) if s["domain"] == "legal-ko")
    assert legal["serving"] == "v1 (75%) + v2 (25%)" and legal["serving_weights"] == {"v1": 0.75, "v2": 0.25}
    assert (legal["candidate"], legal["gate"], legal["cost_usd"]) == ("v3", "block (safety_refusal)", 0.0123)

    table = runner.invoke(app, ["status", "--server", served.url, "--api-key", KEY]).output
    assert "legal-ko" in table and "block (safety_refusal)" in table and "v1 (75%) + v2 (25%)" in table
