"""`qlora base-model`: build or verify a base profile and print what the base_model asset reports."""
from __future__ import annotations

import json
from typing import Optional

import typer


def base_model(
    profile: Optional[str] = typer.Option(None, "--profile", help="tiny | smollm2-135m | llama3-8b; default $QLORA_BASE_PROFILE, else tiny"),
    path: Optional[str] = typer.Option(None, "--path", help="local HF checkpoint (checkpoint profiles); default $QLORA_BASE_MODEL_PATH"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build (tiny), convert (smollm2-135m) or verify (a local checkpoint) a base: fingerprint, parameters, template."""
    import os

    from transformers import AutoTokenizer

    from qlora.modeling.base_checks import chat_template_check
    from qlora.modeling.base_model import BaseModelError, materialize_base, param_count
    from qlora.modeling.profiles import selected_profile

    profile = profile or selected_profile()
    try:
        record, reused = materialize_base(profile, path or os.environ.get("QLORA_BASE_MODEL_PATH"),
                                          log=lambda m: typer.echo(m, err=True))
    except BaseModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    template = chat_template_check(AutoTokenizer.from_pretrained(record["model_path"]))
    facts = {"profile": profile, "fingerprint": record["fingerprint"], "path": record["model_path"],
             "parameters": param_count(record["model_path"]), "reused": reused,
             "chat_template": template["family"], "template_check": "pass" if template["passed"] else "FAIL",
             "template_problems": template["problems"]}
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
    else:
        typer.echo(f"base {profile}: {'verified existing build' if reused else 'built'} at {facts['path']}")
        typer.echo(f"  fingerprint:   {facts['fingerprint']}")
        typer.echo(f"  parameters:    {facts['parameters']:,}")
        typer.echo(f"  chat template: {facts['chat_template']}, check {facts['template_check']}"
                   + (f" ({'; '.join(template['problems'])})" if template["problems"] else ""))
    raise typer.Exit(0 if template["passed"] else 1)


def register(app: typer.Typer) -> None:
    app.command("base-model")(base_model)
