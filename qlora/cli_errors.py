"""One handler for the errors a user can cause, so every `qlora` command reports them the same way:
one block naming the file, line and field (the library's messages do), and what to do; no traceback.

Exit codes (docs/operations.md): 0 done; 1 a decision said no (gate block, deploy rolled back);
2 unusable input (a config, data or path the user gave); 3 a deploy's rollback could not be
confirmed; 4 the serving endpoint is unreachable. QLORA_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import os

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

EXIT_INPUT = 2
EXIT_UNREACHABLE = 4


def _user_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(input errors, serving errors); imported lazily so `qlora --help` stays fast."""
    from qlora.core.adapters import AdapterNotFoundError
    from qlora.deploy.rollback import RollbackTargetError
    from qlora.ops.endpoint import NoRouterError
    from qlora.serving.client import ServingError

    # The project's config and data errors are ValueErrors whose messages name file, line and field.
    return (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, AdapterNotFoundError,
            RollbackTargetError), (NoRouterError, ServingError, TimeoutError)


def hint_for(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "check the path (relative paths are read from the current directory), or create the file"
    name = type(exc).__name__
    if name in {"NoRouterError"}:
        return "start the router with `qlora serve` (or `qlora demo`), or pass --server URL"
    if name in {"ServingError", "TimeoutError"}:
        return "is the router up? `qlora status` shows what serves; --server picks another URL"
    if name in {"AdapterNotFoundError", "RollbackTargetError"}:
        return "`qlora status` lists each domain's versions; train or deploy one first"
    return "fix the value named above and run the command again"


def report(exc: BaseException) -> str:
    message = str(exc)
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        message = f"{exc.filename}: {exc.strerror.lower()}"  # not "[Errno 2] ... 'path'"
    return f"error: {message}\n  what to do: {hint_for(exc)}"


class ErrorReportingGroup(TyperGroup):
    """The `qlora` group: a user's mistake becomes one message and an exit code, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # usage errors and exit codes: click's own handling
            raise
        except Exception as exc:
            if os.environ.get("QLORA_DEBUG"):
                raise
            inputs, serving = _user_errors()
            if not isinstance(exc, inputs + serving):
                raise
            typer.echo(report(exc), err=True)
            raise typer.Exit(EXIT_UNREACHABLE if isinstance(exc, serving) else EXIT_INPUT) from None
