"""The `qlora` command: the seed's CI scripts and operator commands over the same library code.

Each area registers its own commands (``qlora_assets/<area>/cli.py: register(app)``);
heavy imports happen inside the commands so `qlora --help` stays fast.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])


@app.callback()
def _root() -> None:
    """qlora-platform: the QLoRA adapter cycle (data -> adapter -> eval -> gate -> serving)."""

# Areas that contribute commands, in help order.
AREAS = ["data", "modeling", "training", "serving", "evaluation", "deploy", "demo"]

for _area in AREAS:
    try:
        _module = importlib.import_module(f"qlora_assets.{_area}.cli")
    except ModuleNotFoundError as exc:  # an area without commands yet
        if exc.name != f"qlora_assets.{_area}.cli":
            raise
        continue
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
