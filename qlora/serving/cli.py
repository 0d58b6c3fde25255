"""``qlora serve``: the embedded server + router, or the router in front of vLLM (and vLLM's command)."""
from __future__ import annotations

import os
from pathlib import Path

import typer


def serve(
    backend: str = typer.Option("embedded", help="embedded (transformers + peft) or vllm"),
    config: Path = typer.Option(None, help="serving profile; default configs/serving/<backend>.yaml"),
    print_command: bool = typer.Option(False, "--print-command", help="vllm: print the `vllm serve` command and env"),
    check_adapter: list[Path] = typer.Option(None, help="vllm: say whether the profile can serve these adapters"),
    port: int = typer.Option(None, help="router port (the public URL); default from the profile"),
    base_model: Path = typer.Option(None, help="embedded: base model folder; default from the profile"),
) -> None:
    """Serve adapters behind the router: embedded by default, or in front of a running vLLM."""
    from qlora.serving.config import load_config

    if backend not in ("embedded", "vllm"):
        raise typer.BadParameter("must be 'embedded' or 'vllm'", param_hint="--backend")
    try:
        profile = load_config(config, backend)
    except (ValueError, FileNotFoundError) as exc:  # a user's config mistake: say where, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if backend == "vllm":
        _vllm(profile, config, print_command, check_adapter or [], port)
    else:
        if print_command or check_adapter:
            raise typer.BadParameter("only with --backend vllm", param_hint="--print-command/--check-adapter")
        _embedded(profile, port, base_model)


def _vllm(profile, config_path, print_command: bool, adapters: list[Path], port: int | None) -> None:
    from qlora.serving.vllm_profile import check_adapter_for_vllm, router_command, vllm_command

    if print_command:
        command = vllm_command(profile)
        typer.echo("# vLLM (on the GPU host):")
        for key, value in command.env.items():
            typer.echo(f"export {key}={value}")
        typer.echo(command.shell())
        typer.echo("# router (its own process, in front of vLLM):")
        typer.echo(" ".join(router_command(config_path)))
        return
    if adapters:
        refused = 0
        for path in adapters:
            reasons = check_adapter_for_vllm(path, profile)
            refused += bool(reasons)
            typer.echo(f"{path}: " + ("REFUSED: " + " ".join(reasons) if reasons else "ok"))
        raise typer.Exit(1 if refused else 0)
    _run_router(profile, port)


def _run_router(profile, port: int | None) -> None:
    import uvicorn

    from qlora.serving.aliases import AliasTable
    from qlora.serving.base_identity import base_fingerprint
    from qlora.serving.router import Router, create_router_app
    from qlora.serving.state_files import LoadedAdapters
    from qlora.core.paths import paths

    api_key = os.environ.get(profile.router.api_key_env)
    if not api_key:
        raise typer.BadParameter(f"set {profile.router.api_key_env}: the router's admin routes need a key")
    from qlora.serving.arms import ArmRouting

    state = paths().serving_state
    aliases = AliasTable(state / "aliases.json")
    router = Router(profile.url, api_key, aliases, paths().adapters, arm_routing=ArmRouting.in_state_dir(state, aliases),
                    backend_api_key=os.environ.get(profile.api_key_env) or None,
                    timeout_s=profile.router.request_timeout_s, max_lora_rank=profile.max_lora_rank,
                    loaded=LoadedAdapters(state / "adapters.json"),
                    base_fingerprint=profile.base_fingerprint or base_fingerprint(profile.model),
                    router_config=profile.router)
    typer.echo(f"router on http://{profile.router.host}:{port or profile.router.port} -> vLLM {profile.url}")
    uvicorn.run(create_router_app(router), host=profile.router.host, port=port or profile.router.port,
                log_level="info")


def _embedded(profile, port: int | None, base_model: Path | None) -> None:
    from qlora.serving.daemon import admin_key
    from qlora.serving.embedded import start_embedded
    from qlora.core.paths import paths

    handle = start_embedded(base_model, port=profile.router.port if port is None else port,
                            api_key=admin_key(paths().serving_state), config=profile, host=profile.router.host)
    typer.echo(f"router (public): {handle.url}\nembedded server: {handle.backend_url}")
    typer.echo(f"admin key: in {paths().serving_state / 'api_key'} (or ${profile.router.api_key_env})")
    try:
        handle.wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
