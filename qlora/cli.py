"""The `qlora` command: the seed's CI scripts and operator commands over the same library code.

Each area registers its own commands (``qlora/<area>/cli.py: register(app)``);
heavy imports happen inside the commands so `qlora --help` stays fast.
"""
from __future__ import annotations

import typer

from qlora.ab import cli as ab_cli
from qlora.cli_errors import ErrorReportingGroup
from qlora.data import cli as data_cli
from qlora.deploy import cli as deploy_cli
from qlora.evaluation import cli as evaluation_cli
from qlora.modeling import cli as modeling_cli
from qlora.serving import cli as serving_cli
from qlora.ops import cli as ops_cli
from qlora.training import cli as training_cli

# ErrorReportingGroup: one handler for user errors (qlora/cli_errors.py), so no command prints a traceback for them.
app = typer.Typer(cls=ErrorReportingGroup, no_args_is_help=True, add_completion=False,
                  help=__doc__.splitlines()[0])


@app.callback()
def _root() -> None:
    """qlora-platform: the QLoRA adapter cycle (data -> adapter -> eval -> gate -> serving)."""


# Areas that contribute commands, in help order; each has `cli.register(app)`.
for _area_cli in (data_cli, modeling_cli, training_cli, serving_cli, evaluation_cli, deploy_cli, ab_cli, ops_cli):
    _area_cli.register(app)
