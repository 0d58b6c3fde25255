"""`qlora demo`."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(domain: list[str] = typer.Option(None, "--domain", help="Only these domains (default: all).")) -> None:
        """Run the whole cycle for every sample domain on the embedded defaults and print a summary."""
        from qlora_assets.demo.run import run_demo, summary
        from qlora.core.paths import discover_domains

        domains = domain or discover_domains()
        outcomes = run_demo(domains)
        typer.echo(summary(domains))
        failed = [o["domain"] for o in outcomes if not o["success"]]
        if failed:
            typer.echo(f"\nruns failed for: {', '.join(failed)} (see `make ui` -> Runs)", err=True)
            raise typer.Exit(1)
