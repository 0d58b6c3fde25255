"""The `qlora` console entry: the library's commands plus those that drive Dagster.

`qlora/cli.py` holds every command that needs only the library; `qlora demo` materializes the
asset graph, so it is registered here, on the Dagster side of the boundary.
"""
from __future__ import annotations

from qlora.cli import app
from qlora_assets.demo import cli as demo_cli

demo_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
