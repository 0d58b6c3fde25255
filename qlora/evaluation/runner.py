"""Run a domain's eval set on the candidate adapter, the base model and the deployed adapter.

The candidate is loaded under a staging name (``<domain>@staging-<version>``)
that no client routes to, evaluated, and always unloaded. Requests go through
``/v1/chat/completions`` (the server applies the chat template) with many in
flight at once; the seed sent raw instructions one at a time. The three models
run one after another, so each one's latency is measured on its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from qlora.core.io import read_json
from qlora.evaluation.config import EvalSettings
from qlora.evaluation.eval_set import EvalCase
from qlora.evaluation.results import EvalResults, ModelReport
from qlora.evaluation.scoring import RowScore, aggregate, score_rows


def staging_name(domain: str, version: str) -> str:
    return f"{domain}@staging-{version}"


@dataclass
class ModelRun:
    model: str
    outcomes: list[Any]
    wall_s: float


def run_eval_set(client, model: str, cases: Sequence[EvalCase], settings: EvalSettings) -> ModelRun:
    """Send every case to ``model`` with ``settings.concurrency`` requests in flight; keep errors as outcomes."""
    conversations = [[dict(m) for m in case.messages] for case in cases]
    started = time.perf_counter()
    outcomes = client.chat_many(
        model,
        conversations,
        concurrency=settings.concurrency,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
    return ModelRun(model, list(outcomes), time.perf_counter() - started)


def score_run(role: str, run: ModelRun, cases: Sequence[EvalCase], settings: EvalSettings) -> tuple[ModelReport, list[RowScore]]:
    rows = score_rows(cases, run.outcomes, settings.all_refusal_phrases)
    metrics = aggregate(rows, run.outcomes, run.wall_s)
    return ModelReport(role, run.model, metrics, len(cases), run.wall_s), rows


def base_model_name(client) -> str:
    """The served base model: the `/v1/models` card that is not an adapter (no `parent`)."""
    cards = client.models()
    for card in cards:
        card = card if isinstance(card, dict) else vars(card)
        if not card.get("parent"):
            return card["id"]
    raise ValueError("the server lists no base model in /v1/models")


def deployed_model_name(client, domain: str) -> str | None:
    """The versioned adapter the domain's router alias sends most traffic to; None when nothing is deployed."""
    from qlora.serving.client import ServingError

    try:
        weights = client.get_alias(domain)
    except ServingError as exc:
        if exc.status == 404:  # no alias for the domain (or a bare vLLM without our router)
            return None
        raise
    return max(weights, key=weights.get) if weights else None


def adapter_identity(adapter_path: Path) -> tuple[str, str]:
    """(domain, version) of an adapter folder `.../adapters/<domain>/<version>/` (manifest wins)."""
    manifest_path = adapter_path / "manifest.json"
    manifest = read_json(manifest_path, "adapter manifest") if manifest_path.is_file() else {}
    return str(manifest.get("domain") or adapter_path.parent.name), str(manifest.get("version") or adapter_path.name)


def evaluate_adapter(
    client,
    adapter_path: str | Path,
    cases: Sequence[EvalCase],
    settings: EvalSettings,
    domain: str | None = None,
    version: str | None = None,
    eval_data: str = "",
) -> EvalResults:
    """Candidate under a staging name, then the base, then the adapter the domain's alias points at."""
    adapter_path = Path(adapter_path).resolve()
    if not (adapter_path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_path}: not an adapter folder (no adapter_config.json)")
    found_domain, found_version = adapter_identity(adapter_path)
    domain, version = domain or found_domain, version or found_version

    staged = staging_name(domain, version)
    client.load_adapter(staged, str(adapter_path))
    try:
        client.wait_for_model(staged)
        candidate_run = run_eval_set(client, staged, cases, settings)
    finally:
        client.unload_adapter(staged)
    candidate, candidate_rows = score_run("candidate", candidate_run, cases, settings)
    reports = {"candidate": candidate}
    reports["base"], _ = score_run("base", run_eval_set(client, base_model_name(client), cases, settings), cases, settings)

    deployed = deployed_model_name(client, domain)
    if deployed:
        reports["deployed"], _ = score_run("deployed", run_eval_set(client, deployed, cases, settings), cases, settings)
    return EvalResults(
        domain=domain,
        adapter_version=version,
        eval_data=eval_data,
        concurrency=settings.concurrency,
        reports=reports,
        candidate_rows=candidate_rows,
        deployed_model=deployed or None,
    )


def _base_for(adapter_path: Path, base_model: Path | None) -> Path:
    if base_model:
        return base_model
    manifest_path = adapter_path / "manifest.json"
    manifest = read_json(manifest_path, "adapter manifest") if manifest_path.is_file() else {}
    base = (manifest.get("base") or {}).get("path")
    if not base:
        raise ValueError(f"{manifest_path}: field 'base.path' missing; pass --base-model or --server")
    return Path(base)


def evaluate_adapter_cli(
    model: Path,
    eval_data: Path,
    server: str | None = None,
    api_key: str | None = None,
    base_model: Path | None = None,
    domain: str | None = None,
    config_path: Path | None = None,
    concurrency: int | None = None,
) -> EvalResults:
    """`qlora evaluate`: against ``server``, or an embedded server started (and stopped) for this run.

    The embedded server gets a private alias table, so nothing counts as deployed there:
    compare against a deployed adapter by pointing --server at the real router.
    """
    import tempfile

    from qlora.evaluation.config import load_eval_settings
    from qlora.evaluation.eval_set import load_eval_cases
    from qlora.serving.client import ServingClient

    settings = load_eval_settings(config_path)
    if concurrency:
        settings = settings.model_copy(update={"concurrency": concurrency})
    cases = load_eval_cases(eval_data)
    model = Path(model).resolve()
    if server:
        with ServingClient(server, api_key=api_key) as client:
            return evaluate_adapter(client, model, cases, settings, domain, eval_data=str(eval_data))

    from qlora.serving.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="qlora-eval-") as state_dir:
        handle = start_embedded(_base_for(model, base_model), state_dir=state_dir, adapters_root=model.parent)
        try:
            with ServingClient(handle.url, api_key=handle.api_key, timeout_s=600) as client:
                return evaluate_adapter(client, model, cases, settings, domain, eval_data=str(eval_data))
        finally:
            handle.stop()
