"""One embedded server + router per QLORA_HOME, as a detached process that outlives a Dagster run.

``ensure_running`` starts it if needed (under a file lock, so two runs never start two) and
records pid, URLs and the admin key in ``$QLORA_HOME/serving/server.json`` (mode 0600).
The daemon holds ``daemon.lock`` for its whole life and rewrites ``server.json`` if it is
damaged or deleted, so a truncated state file never makes ``ensure_running`` start a second
server beside the first: it sees the lock held and waits for the state to come back.
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
from filelock import FileLock, Timeout

from qlora.core.io import read_json, write_json_atomic, write_text_atomic
from qlora.core.paths import REPO_ROOT, paths

STATE_FILE = "server.json"
KEY_FILE = "api_key"
DAEMON_LOCK = "daemon.lock"  # held by the living daemon (an OS lock: released when the process dies)
STATE_REPAIR_S = 0.5        # how often the daemon checks that server.json still says who it is


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
    """The recorded process lives and its router answers (/v1/models: up, whether or not every alias is)."""
    if not state or not _pid_alive(int(state.get("pid", 0) or 0)):
        return False
    try:
        return httpx.get(f"{state['url']}/v1/models", timeout=5).status_code == 200
    except (httpx.HTTPError, KeyError):
        return False


def daemon_alive(state_dir: Path) -> bool:
    """A daemon for this state dir is running (it holds daemon.lock), whatever server.json says."""
    lock = FileLock(str(state_dir / DAEMON_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def admin_key(state_dir: Path) -> str:
    """QLORA_SERVING_API_KEY, else a key kept in the state dir so clients survive a server restart.

    An empty or blank key file gets a new key written to it: a server never runs with a key
    nobody can read."""
    if key := os.environ.get("QLORA_SERVING_API_KEY", "").strip():
        return key
    key_file = state_dir / KEY_FILE
    if key_file.is_file() and (key := key_file.read_text(encoding="utf-8").strip()):
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    write_text_atomic(key_file, key, mode=0o600)  # it holds the admin key
    return key


def _wait_for_state(state_dir: Path, seconds: float) -> dict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (state := read_state(state_dir)) is not None:
            return state
        time.sleep(0.1)
    return None


def ensure_running(base_model_path: str | Path, state_dir: str | Path | None = None,
                   adapters_root: str | Path | None = None, config_path: str | Path | None = None,
                   port: int = 0, timeout_s: float = 180) -> dict:
    """The running server's state ({pid, url, backend_url, api_key, base_model}), starting it if needed."""
    state_dir = Path(state_dir) if state_dir else paths().serving_state
    state_dir.mkdir(parents=True, exist_ok=True)
    base = str(Path(base_model_path).resolve())
    with FileLock(str(state_dir / "server.lock"), timeout=timeout_s):
        state = read_state(state_dir)
        if state is None and daemon_alive(state_dir):
            # server.json is damaged but its daemon lives: it rewrites the file within STATE_REPAIR_S.
            state = _wait_for_state(state_dir, 10 * STATE_REPAIR_S + 5)
            if state is None:
                raise RuntimeError(f"a server holds {state_dir / DAEMON_LOCK} but {state_dir / STATE_FILE} stays "
                                   "unreadable; stop that process before starting another")
        if is_serving(state) and state.get("base_model") == base:
            return state
        if state and _pid_alive(int(state.get("pid", 0) or 0)):
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


def _keep_state(state_dir: Path, state: dict, done: threading.Event) -> None:
    """Rewrite server.json whenever it no longer says who this daemon is (truncated, deleted, edited)."""
    while not done.wait(STATE_REPAIR_S):
        if read_state(state_dir) != state:
            _write_state(state_dir, state)


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
    lock = FileLock(str(state_dir / DAEMON_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SystemExit(f"another server already runs for {state_dir} (it holds {DAEMON_LOCK})") from None
    config = load_config(args.config, "embedded") if args.config else None
    handle = start_embedded(args.base, port=args.port, api_key=os.environ["QLORA_SERVING_API_KEY"],
                            state_dir=state_dir, adapters_root=args.adapters_root, config=config)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    state = {"pid": os.getpid(), "url": handle.url, "backend_url": handle.backend_url,
             "api_key": handle.api_key, "base_model": args.base, "started_at": time.time()}
    _write_state(state_dir, state)
    threading.Thread(target=_keep_state, args=(state_dir, state, done), daemon=True).start()
    done.wait()
    handle.stop()
    lock.release()


if __name__ == "__main__":
    main()
