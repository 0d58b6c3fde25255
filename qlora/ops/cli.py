"""`qlora status`, `qlora chat`, `qlora new-domain`: the operator's view and hands on the running cycle."""
from __future__ import annotations

import sys
from typing import Optional

import typer

SERVER = typer.Option(None, "--server", envvar="QLORA_SERVING_URL",
                      help="Router URL (default: the router `qlora serve` runs for this QLORA_HOME).")
API_KEY = typer.Option(None, "--api-key", envvar="QLORA_SERVING_API_KEY", help="Bearer key for the router's admin routes.")


def status(
    server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per domain."),
) -> None:
    """Per domain: the version serving (from the router), the last candidate and its gate verdict,
    the last training run and its cost."""
    from qlora.core.paths import paths
    from qlora.core.warehouse import Warehouse
    from qlora.ops.endpoint import running_router
    from qlora.ops.status import as_json as to_json, as_table, domain_statuses

    client = running_router(server, api_key, timeout_s=10)
    statuses = domain_statuses(Warehouse(paths().warehouse), client)
    typer.echo(to_json(statuses) if as_json else as_table(statuses))


def chat(
    domain: Optional[str] = typer.Option(None, "--domain", help="Talk to the domain's alias (what serves it now)."),
    model: Optional[str] = typer.Option(None, "--model", help="Any served name instead: a version 'legal-ko@v3' "
                                        "or the base model."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default), as the eval and the gate."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Longest answer, in tokens."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt to start the conversation with."),
    server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY,
) -> None:
    """Chat in the terminal with a domain's adapter through the router, streamed token by token."""
    from qlora.ops.chat import ChatSession, run_chat
    from qlora.ops.endpoint import require_router

    if bool(domain) == bool(model):
        raise typer.BadParameter("give exactly one of --domain or --model")
    session = ChatSession(require_router(server, api_key), domain or model, system, max_tokens, temperature)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    run_chat(session, sys.stdin, write)


def new_domain(
    name: str = typer.Argument(..., help="Domain name: a folder, a partition and the served model name."),
    language: str = typer.Option(..., "--language", help="ISO 639-1 code of the domain's rows (en, ko, ...)."),
    licence: str = typer.Option(..., "--licence", "--license", help="Licence of the domain's data (e.g. internal)."),
) -> None:
    """Create a domain: its data folder, its domains.yaml entry and an eval-set skeleton with the rows every gate needs."""
    from qlora.ops.new_domain import create_domain

    typer.echo(create_domain(name, language, licence).next_steps())


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("chat")(chat)
    app.command("new-domain")(new_domain)
