"""A throw-away production Dagster stack for tests: Debian PostgreSQL on loopback, a gRPC code
server, the daemon and the webserver, all configured by deploy/prod/ and environment variables.

Only the processes this module starts are ever stopped, each by its own process group.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROD = REPO / "deploy" / "prod"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout_s: float, on_timeout: Callable[[], str] = str,
              poll_s: float = 1.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{on_timeout()}")


class ProdStack:
    """``start()`` brings up Postgres, code server and webserver; ``start_daemon()`` sets things moving.

    ``env`` is what every Dagster process (and the test) must see.
    """

    def __init__(self, root: Path, *, max_concurrent_runs: int, sensor_interval_s: int = 5,
                 code_file: Path = REPO / "definitions.py"):
        self.root = root
        self.code_file = code_file
        self.procs: dict[str, subprocess.Popen] = {}
        self.last_location_error = ""
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home = root / "dagster_home"
        self.web_port = free_port()
        # initdb runs as the postgres user, which cannot enter pytest's private (0700) temp dirs.
        self.pg_data = Path(tempfile.gettempdir()) / f"qlora-pg-{secrets.token_hex(4)}"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(free_port()),
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_PG_USERNAME": "dagster",
            "DAGSTER_PG_PASSWORD": secrets.token_urlsafe(16),
            "QLORA_PG_DATA": str(self.pg_data),
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "QLORA_HOME": str(root / "qlora_home"),
            "QLORA_CONFIG_DIR": str(self._configs(sensor_interval_s)),
        }
        self._write_instance_yaml(max_concurrent_runs)

    def _configs(self, sensor_interval_s: int) -> Path:
        """The repo's configs, with sensors ticking fast enough for a test."""
        configs = self.root / "configs"
        shutil.copytree(Path(os.environ.get("QLORA_CONFIG_DIR", REPO / "configs")), configs)
        schedule = yaml.safe_load((configs / "schedule.yaml").read_text()) or {}
        for sensor in ("training_data", "config_change"):
            schedule.setdefault("sensors", {}).setdefault(sensor, {})["interval_seconds"] = sensor_interval_s
        (configs / "schedule.yaml").write_text(yaml.safe_dump(schedule))
        return configs

    def _write_instance_yaml(self, max_concurrent_runs: int) -> None:
        """deploy/prod/dagster.yaml as shipped, except the run limit sized to this (small) host."""
        config = yaml.safe_load((PROD / "dagster.yaml").read_text())
        config["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        (self.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))

    # -- processes ---------------------------------------------------------------------------
    def run(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done

    def spawn(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen(list(args), cwd=REPO, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, name: str, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(wait_s)

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.run("bash", str(REPO / "scripts" / "install-postgres.sh"), "start", timeout_s=600)
        # One process creates the schema first; several creating it at once race on Postgres DDL.
        self.run(str(BIN / "dagster"), "instance", "migrate")
        self.spawn("code_server", str(BIN / "dagster"), "code-server", "start", "-f", str(self.code_file),
                   "-d", str(REPO), "-h", "127.0.0.1", "-p", self.env["DAGSTER_CODE_SERVER_PORT"],
                   "--location-name", "qlora_platform")
        self.spawn("webserver", str(BIN / "dagster-webserver"), "-w", str(PROD / "workspace.yaml"),
                   "-h", "127.0.0.1", "-p", str(self.web_port))
        wait_for("the code location to load in the webserver", self.location_loaded, 240,
                 lambda: f"{self.last_location_error}\n{self.log_tail()}")

    def start_daemon(self) -> None:
        self.spawn("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(PROD / "workspace.yaml"))

    def kill_daemon(self) -> None:
        """SIGKILL, as a crashed or OOM-killed daemon: no chance to clean up."""
        self.stop("daemon", signal.SIGKILL)

    def close(self) -> None:
        for name in ("daemon", "webserver", "code_server"):
            self.stop(name)
        self.run("bash", str(REPO / "scripts" / "install-postgres.sh"), "stop")
        shutil.rmtree(self.pg_data, ignore_errors=True)

    # -- webserver ---------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"http://127.0.0.1:{self.web_port}/graphql",
                              json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def location_loaded(self) -> bool:
        try:
            data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries {"
                                " name locationOrLoadError { __typename ... on PythonError { message } } } } } }")
        except (httpx.HTTPError, AssertionError):
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        states = [e["locationOrLoadError"] or {} for e in entries]
        # Kept for the timeout message: the code server may still be starting (a transient error).
        self.last_location_error = "\n".join(s.get("message", "") for s in states if "message" in s)
        return any(s.get("__typename") == "RepositoryLocation" for s in states)

    def runs_seen_by_webserver(self) -> dict[str, str]:
        data = self.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")
        return {r["runId"]: r["status"] for r in data["runsOrError"]["results"]}
