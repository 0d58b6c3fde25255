"""`qlora deploy` and `qlora rollback`: blue-green swaps on a running server + router.

Exit codes: 0 the version serves; 1 blocked by the gate or rolled back (the old
version still serves; the reason is printed and recorded); 2 unusable input;
3 the rollback itself could not be confirmed (look at the server now).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

SERVER = typer.Option(None, "--server", envvar="QLORA_SERVING_URL",
                      help="Router URL (default: the server `qlora serve` runs for this QLORA_HOME).")
API_KEY = typer.Option(None, "--api-key", envvar="QLORA_SERVING_API_KEY", help="Bearer key for admin routes.")
CONFIG = typer.Option(None, "--config", help="Deploy settings YAML (default configs/deploy.yaml).")
EVAL_DATA = typer.Option(None, "--eval-data", help="Golden prompts file (default data/eval/<domain>.jsonl).")


def _endpoint(server: Optional[str], api_key: Optional[str]) -> tuple[str, Optional[str]]:
    if server:
        return server, api_key
    from qlora.serving.daemon import is_serving, read_state
    from qlora.core.paths import paths

    state = read_state(paths().serving_state)
    if not is_serving(state):
        raise ValueError(f"no server runs for {paths().serving_state}: start one with `qlora serve`, or pass --server")
    return state["url"], api_key or state.get("api_key")


def _setup(server: Optional[str], api_key: Optional[str], config: Optional[Path], domain: str, eval_data: Optional[Path],
           strategy: Optional[str] = None):
    from qlora.deploy.config import load_deploy_config
    from qlora.deploy.smoke import golden_prompts
    from qlora.serving.client import ServingClient
    from qlora.core.paths import paths
    from qlora.core.warehouse import Warehouse

    overrides = {"strategy": strategy} if strategy else {}
    settings = load_deploy_config(config, **overrides)
    url, key = _endpoint(server, api_key)
    client = ServingClient(url, api_key=key, timeout_s=settings.request_timeout_s)
    golden = golden_prompts(domain, settings.golden_prompts, eval_data)
    return client, Warehouse(paths().warehouse), settings, golden


def _report(record, as_json: bool) -> None:
    from qlora.deploy.history import DEPLOYED, FAILED

    if as_json:
        typer.echo(json.dumps({k: v for k, v in vars(record).items() if k != "steps"} | {"steps": record.steps},
                              default=str, ensure_ascii=False, indent=2))
    else:
        for step in record.steps:
            typer.echo(f"  {'ok  ' if step['ok'] else 'FAIL'} {step['step']:<12} {step['seconds']:>7.2f}s")
        typer.echo(f"{record.action} {record.domain}@{record.version}: {record.result}"
                   + (f" ({record.reason})" if record.reason else ""))
    if record.result == FAILED:
        raise typer.Exit(3)
    raise typer.Exit(0 if record.result == DEPLOYED else 1)


def deploy(
    domain: str = typer.Option(..., "--domain", help="Domain; its alias on the router."),
    adapter: Path = typer.Option(..., "--adapter", help="Adapter folder (artifacts/adapters/<domain>/<version>)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="canary or direct (default: the config's)."),
    server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY, config: Optional[Path] = CONFIG,
    eval_data: Optional[Path] = EVAL_DATA,
    as_json: bool = typer.Option(False, "--json", help="Print the deployment record as JSON."),
) -> None:
    """Deploy an adapter version that passed the gate: load, smoke-test, canary, drain, unload the old one."""
    from qlora.core.adapters import adapter_from_path
    from qlora.deploy.deployer import Deployer

    try:
        client, warehouse, settings, golden = _setup(server, api_key, config, domain, eval_data, strategy)
        ref = adapter_from_path(domain, adapter.resolve())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _report(Deployer(client, warehouse, settings, golden).deploy(ref), as_json)


def rollback(
    domain: str = typer.Option(..., "--domain", help="Domain; its alias on the router."),
    to: Optional[str] = typer.Option(None, "--to", help="Version to serve (default: the one live before now)."),
    server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY, config: Optional[Path] = CONFIG,
    eval_data: Optional[Path] = EVAL_DATA,
    as_json: bool = typer.Option(False, "--json", help="Print the deployment record as JSON."),
) -> None:
    """Put an earlier live version back on the domain's alias (smoke-tested, no canary)."""
    from qlora.deploy.rollback import RollbackTargetError, rollback as do_rollback

    try:
        client, warehouse, settings, golden = _setup(server, api_key, config, domain, eval_data)
        record = do_rollback(client, warehouse, settings, golden, domain, to)
    except (ValueError, RollbackTargetError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _report(record, as_json)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("rollback")(rollback)
