"""One embedded server + router per QLORA_HOME, as a detached process that outlives a Dagster run.

``ensure_running`` starts it if needed (under a file lock, so two runs never start two) and
records pid, URLs and the admin key in ``$QLORA_HOME/serving/server.json`` (mode 0600).
Run as ``python -m qlora.serving.daemon`` by ``ensure_running`` only.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from filelock import FileLock

from qlora.core.io import read_json, write_json_atomic
from qlora.core.paths import REPO_ROOT, paths

STATE_FILE = "server.json"
KEY_FILE = "api_key"


def read_state(state_dir: Path) -> dict | None:
    try:
        return read_json(state_dir / STATE_FILE, "server state")
    except (OSError, ValueError):  # JsonInputError is a ValueError
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_serving(state: dict | None) -> bool:
    if not state or not _pid_alive(int(state.get("pid", 0))):
        return False
    try:
        return httpx.get(f"{state['url']}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def admin_key(state_dir: Path) -> str:
    """QLORA_SERVING_API_KEY, else a key kept in the state dir so clients survive a server restart."""
    if key := os.environ.get("QLORA_SERVING_API_KEY"):
        return key
    key_file = state_dir / KEY_FILE
    if key_file.is_file():
        return key_file.read_text(encoding="utf-8").strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def ensure_running(base_model_path: str | Path, state_dir: str | Path | None = None,
                   adapters_root: str | Path | None = None, config_path: str | Path | None = None,
                   port: int = 0, timeout_s: float = 180) -> dict:
    """The running server's state ({pid, url, backend_url, api_key, base_model}), starting it if needed."""
    state_dir = Path(state_dir) if state_dir else paths().serving_state
    state_dir.mkdir(parents=True, exist_ok=True)
    base = str(Path(base_model_path).resolve())
    with FileLock(str(state_dir / "server.lock"), timeout=timeout_s):
        state = read_state(state_dir)
        if is_serving(state) and state.get("base_model") == base:
            return state
        if state and _pid_alive(int(state.get("pid", 0))):
            stop(state_dir)  # a server for another base (or a hung one) is replaced
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        argv = [sys.executable, "-m", "qlora.serving.daemon", "--base", base, "--state-dir", str(state_dir),
                "--port", str(port)]
        if adapters_root:
            argv += ["--adapters-root", str(adapters_root)]
        if config_path:
            argv += ["--config", str(config_path)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               "QLORA_SERVING_API_KEY": admin_key(state_dir)}
        with open(state_dir / "server.log", "ab") as log:
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=REPO_ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = read_state(state_dir)
            if state and state.get("pid") == child.pid and is_serving(state):
                return state
            if child.poll() is not None:
                tail = (state_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded server exited with {child.returncode}; log {state_dir}/server.log:\n{tail}")
            time.sleep(0.2)
        child.terminate()
        raise TimeoutError(f"embedded server not healthy after {timeout_s}s; see {state_dir}/server.log")


def stop(state_dir: str | Path | None = None, timeout_s: float = 15) -> bool:
    """SIGTERM the recorded server and wait for it; True when one was running."""
    state_dir = Path(state_dir) if state_dir else paths().serving_state
    state = read_state(state_dir)
    if not state or not _pid_alive(int(state.get("pid", 0))):
        return False
    os.kill(int(state["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(int(state["pid"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def _write_state(state_dir: Path, state: dict) -> None:
    write_json_atomic(state_dir / STATE_FILE, state, mode=0o600, indent=None)  # it holds the admin key


def main(argv: list[str] | None = None) -> None:
    from qlora.serving.config import load_config
    from qlora.serving.embedded import start_embedded

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--adapters-root")
    parser.add_argument("--config")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    config = load_config(args.config, "embedded") if args.config else None
    handle = start_embedded(args.base, port=args.port, api_key=os.environ["QLORA_SERVING_API_KEY"],
                            state_dir=state_dir, adapters_root=args.adapters_root, config=config)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    _write_state(state_dir, {"pid": os.getpid(), "url": handle.url, "backend_url": handle.backend_url,
                             "api_key": handle.api_key, "base_model": args.base, "started_at": time.time()})
    done.wait()
    handle.stop()


if __name__ == "__main__":
    main()
