"""Debian binaries that the monitoring and UI tests drive, installed by the project's own script.

A missing binary fails the test (after the script tried to install it); it never skips.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-system-deps.sh"


def require_binaries(*names: str) -> dict[str, str]:
    """Run scripts/install-system-deps.sh (a no-op when all is there); return name -> path."""
    if not all(shutil.which(name) for name in names):
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{INSTALL_SCRIPT} failed:\n{done.stdout}\n{done.stderr}"
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    assert not missing, f"{missing} not on PATH after {INSTALL_SCRIPT}"
    return found
