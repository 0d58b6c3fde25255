"""Where things live. Every path comes from environment variables with a repo-relative default.

QLORA_HOME      artifacts, base models, adapters, the DuckDB warehouse (default ``.qlora/``)
QLORA_DATA_DIR  raw training data and eval sets (default ``data/``)
QLORA_CONFIG_DIR YAML configs (default ``configs/`` of this repo)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A domain name becomes a partition key, a folder under artifacts/ and a served model alias:
# lowercase letters, digits and '-', starting with a letter or digit.
DOMAIN_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class Paths:
    home: Path
    data_dir: Path
    config_dir: Path

    @property
    def training_dir(self) -> Path:
        return self.data_dir / "training"

    @property
    def eval_dir(self) -> Path:
        return self.data_dir / "eval"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def base_models(self) -> Path:
        return self.home / "base_models"

    @property
    def adapters(self) -> Path:
        return self.home / "artifacts" / "adapters"

    @property
    def serving_state(self) -> Path:
        return self.home / "serving"

    @property
    def datasets(self) -> Path:
        """Exported training data: ``datasets/<domain>/<data_version>/{train,eval}.jsonl``."""
        return self.home / "datasets"

    @property
    def runs(self) -> Path:
        """Training work folders: ``runs/<domain>/<run_key>/`` (checkpoints, for resuming)."""
        return self.home / "runs"

    @property
    def gpu_slots(self) -> Path:
        return self.home / "gpu_slots"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME of `qlora demo` when none is set."""
        return self.home / "dagster_home"


def paths() -> Paths:
    """Resolve paths now (not at import) so tests can point QLORA_HOME at a temp dir."""
    return Paths(
        home=Path(os.environ.get("QLORA_HOME", REPO_ROOT / ".qlora")).resolve(),
        data_dir=Path(os.environ.get("QLORA_DATA_DIR", REPO_ROOT / "data")).resolve(),
        config_dir=Path(os.environ.get("QLORA_CONFIG_DIR", REPO_ROOT / "configs")).resolve(),
    )


class DomainNameError(ValueError):
    """A domain folder (or partition key) whose name breaks the slug rule; the message names it."""


def check_domain_name(name: str, where: str | Path | None = None) -> str:
    """``name`` if it is a valid domain name, else DomainNameError naming it (and ``where``)."""
    if not DOMAIN_NAME.fullmatch(name):
        place = f"{where}: " if where else ""
        raise DomainNameError(
            f"{place}domain folder name {name!r} is not allowed: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit (e.g. 'legal-ko')")
    return name


def discover_domains(training_dir: Path | None = None) -> list[str]:
    """A domain is a folder under data/training/ (a new folder adds a partition).

    Hidden entries (names starting with '.') are skipped. Every other folder must have a valid
    name, be a real folder (a symbolic link is never followed out of the data root) and differ
    from the others by more than case; otherwise DomainNameError names every offending folder."""
    root = training_dir or paths().training_dir
    if not root.is_dir():
        return []
    problems, by_lower, names = [], {}, []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():  # files beside the domains are not domains
            continue
        if entry.is_symlink():
            problems.append(f"{entry}: is a symbolic link; links are never followed (move the folder here)")
            continue
        twin = by_lower.setdefault(entry.name.lower(), entry.name)
        if twin != entry.name:
            problems.append(f"{root}: folders {twin!r} and {entry.name!r} differ only in case; keep one")
            continue
        try:
            names.append(check_domain_name(entry.name, entry))
        except DomainNameError as err:
            problems.append(str(err))
    if problems:
        raise DomainNameError("; ".join(problems))
    return names
