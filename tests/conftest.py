"""Shared fixtures. Every test session gets its own QLORA_HOME and DAGSTER_HOME in a temp dir."""
from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Test modules import definitions.py at collection: they get the local resources whatever the shell
# says; the prod profile is loaded on purpose where it is tested (tests/assets/test_profiles.py).
os.environ["QLORA_PROFILE"] = "local"
# The tiny base serves the tests whatever base the shell chose (set before any module reads it);
# tests of another base set it themselves.
os.environ["QLORA_BASE_PROFILE"] = "tiny"

# Fixture modules shared by several test files (session-scoped fixtures are built once).
pytest_plugins = ["tests.support.serving"]


@pytest.fixture(scope="session", autouse=True)
def qlora_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("qlora_home")
    os.environ["QLORA_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    (home / "dagster_home").mkdir()
    os.environ.setdefault("QLORA_DATA_DIR", str(REPO / "data"))
    # Tests run on the embedded defaults, judged by the demo gate, however pytest is invoked.
    os.environ.setdefault("QLORA_QUALITY_GATE", "quality_gate.demo.yaml")
    # Every process this session starts inherits the marker, so teardown finds its own servers.
    marker = f"QLORA_TEST_SESSION={uuid.uuid4().hex}"
    os.environ["QLORA_TEST_SESSION"] = marker.split("=", 1)[1]
    yield home
    _stop_embedded_servers_of(marker)


def _stop_embedded_servers_of(marker: str) -> None:
    """Detached embedded servers (started by assets through the `serving` resource, also inside
    `dagster dev` runs) outlive their test; stop this session's, never another session's."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qlora.serving.daemon" in cmdline and marker.encode() in environ:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


# The longest modules (minutes each on 2 cores; docs/benchmarks.md, "Test suite"), first: under
# `make test`'s workers (--dist loadfile --no-loadscope-reorder hands modules out in collection
# order; xdist's default reorder puts the modules with the most tests first) each starts on a
# worker at once while the other worker takes the rest, instead of one starting last.
LONGEST_MODULES = ("tests/e2e/test_smollm2_cycle.py", "tests/prod/test_postgres.py")


def pytest_collection_modifyitems(items):
    """A test that needs the tiny base is slow: building it pretrains a model (about a minute on 2 cores)."""
    for item in items:
        if "tiny_base" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    rank = {module: i for i, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_base(qlora_home) -> Path:
    """The tiny base model (profile `tiny`), built once per session under QLORA_HOME; returns its folder."""
    from qlora.modeling.base_model import materialize_base

    record, _ = materialize_base("tiny")
    return Path(record["model_path"])


@pytest.fixture(autouse=True)
def no_leftover_dagster_state_storage():
    """Every test starts with no "current" Dagster defs-state storage, as a fresh process does.

    Entering a DagsterInstance (``dg.instance_for_test()``) sets that storage in a context variable
    and leaving resets it. Under ``make test``'s workers one test left a disposed instance's storage
    set (which one, we could not pin down), and every later test of that worker that loaded
    Definitions against an ephemeral instance failed with "undefined DagsterInstance weakref".
    No public API clears it, hence the internal import (tests only)."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield
