"""`qlora ab start|status|stop|look --domain D` and `qlora feedback`: the A/B over the same library as the assets.

Exit codes: 0 done; 1 refused (an experiment already runs, nothing to compare, a 4xx from the
router); 2 unusable input.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from qlora.deploy.cli import API_KEY, SERVER, _endpoint

ab_app = typer.Typer(no_args_is_help=True, help="Online A/B experiments: start, look, stop.")
DOMAIN = typer.Option(..., "--domain", help="The domain (its public alias) to experiment on.")
AB_CONFIG = typer.Option(None, "--config", help="A/B settings YAML (default configs/ab.yaml).")


def _client(server, api_key):
    from qlora.serving.client import ServingClient

    url, key = _endpoint(server, api_key)
    return ServingClient(url, api_key=key)


def _warehouse():
    from qlora.core.paths import paths
    from qlora.core.warehouse import Warehouse

    return Warehouse(paths().warehouse)


@ab_app.command("start")
def start(domain: str = DOMAIN, version: Optional[str] = typer.Option(None, help="Candidate version (default: newest)"),
          config: Optional[Path] = AB_CONFIG, server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY) -> None:
    """Split the domain's alias between production and the candidate; print the planned sample."""
    from qlora.ab import lifecycle
    from qlora.ab.config import load_ab_config
    from qlora.ab.sample_size import plan_sample
    from qlora.core.adapters import latest_adapter, registered_adapter

    settings = load_ab_config(config)
    store = _warehouse()
    candidate = registered_adapter(store, domain, version) if version else latest_adapter(store, domain)
    if candidate is None:
        raise typer.BadParameter(f"{domain}@{version} is not registered in the warehouse table 'adapters'")
    try:
        record = lifecycle.start(_client(server, api_key), store, settings, candidate)
    except lifecycle.ExperimentError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"started {record.experiment_id}: {record.control} vs {record.candidate} "
               f"({settings.traffic_share:.0%} of traffic to the candidate)")
    typer.echo(f"planned sample: {plan_sample(settings).describe()} ({settings.test}, alpha {settings.alpha}, "
               f"power {settings.power}, effect {settings.minimum_detectable_effect:+g} on {settings.primary_metric})")


@ab_app.command("status")
def status(domain: str = DOMAIN) -> None:
    """The running experiment and its last look."""
    from qlora.ab.lifecycle import status_lines

    for line in status_lines(_warehouse(), domain):
        typer.echo(line)


@ab_app.command("look")
def look(domain: str = DOMAIN, apply: bool = typer.Option(False, help="Promote/reject on the decision."),
         server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY) -> None:
    """Ingest the journal, report, decide (and with --apply act on it), as the sensor does."""
    from qlora.ab import lifecycle

    client = _client(server, api_key)
    deployer = None
    if apply:
        from qlora.deploy.config import load_deploy_config
        from qlora.deploy.deployer import Deployer
        from qlora.deploy.smoke import golden_prompts

        settings = load_deploy_config()
        deployer = Deployer(client, _warehouse(), settings, golden_prompts(domain, settings.golden_prompts))
    result = lifecycle.look(client, _warehouse(), domain, apply=apply, deployer=deployer)
    if result is None:
        typer.echo(f"{domain}: no experiment running")
        raise typer.Exit(1)
    typer.echo(json.dumps({"decision": result.decision.action, "reason": result.decision.reason,
                           "numbers": result.decision.numbers, "outcome": result.outcome}, default=str, indent=2))


@ab_app.command("stop")
def stop(domain: str = DOMAIN, server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY) -> None:
    """End the experiment without a decision: production alone on the alias, the candidate unloaded."""
    from qlora.ab import lifecycle

    stopped = lifecycle.stop(_client(server, api_key), _warehouse(), domain)
    typer.echo(f"stopped {stopped.experiment_id}; {stopped.control} serves {domain}" if stopped
               else f"{domain}: no experiment was running")


def feedback(response_id: Optional[str] = typer.Argument(None, help="The completion id ('id' of the answer)."),
             up: bool = typer.Option(False, "--up"), down: bool = typer.Option(False, "--down"),
             score: Optional[int] = typer.Option(None, "--score", min=1, max=5),
             pair: Optional[tuple[str, str]] = typer.Option(None, "--pair", help="Two response ids compared."),
             preferred: Optional[str] = typer.Option(None, "--preferred", help="The better id of --pair, or 'tie'."),
             server: Optional[str] = SERVER) -> None:
    """Send user feedback on an answer the router served (the public POST /v1/feedback)."""
    import httpx

    body: dict = {"response_id": response_id} if response_id else {}
    if up or down:
        body["rating"] = "up" if up else "down"
    if score is not None:
        body["score"] = score
    if pair:
        body.update(pair=list(pair), preferred=preferred)
    url, _ = _endpoint(server, None)
    answer = httpx.post(f"{url}/v1/feedback", json=body, timeout=30)
    typer.echo(answer.text)
    if answer.status_code >= 400:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(ab_app, name="ab")
    app.command("feedback")(feedback)
