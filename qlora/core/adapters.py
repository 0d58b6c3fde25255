"""The adapter registry: which versions training registered (warehouse table `adapters`), and their names.

vLLM caches adapters by name, so new weights never reuse a name: each version is
served as `<domain>@<version>` and the router moves the public alias (`<domain>`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qlora.core.io import read_json
from qlora.core.warehouse import Warehouse


class AdapterNotFoundError(LookupError):
    """No adapter version to deploy; the message says where we looked."""


@dataclass(frozen=True)
class AdapterRef:
    domain: str
    version: str
    path: str
    train_date: str = ""

    @property
    def served_name(self) -> str:
        return versioned_name(self.domain, self.version)


def versioned_name(domain: str, version: str) -> str:
    return f"{domain}@{version}"


def version_of(served_name: str) -> str:
    return served_name.split("@", 1)[1] if "@" in served_name else served_name


def adapter_from_path(domain: str, path: str | Path) -> AdapterRef:
    """Version and train date come from the adapter's manifest.json, else from the folder name.

    The folder need not exist here: the server checks the path it is given (and
    refuses a missing one), so a deploy from another machine still works.
    """
    path = Path(path)
    manifest = {}
    manifest_file = path / "manifest.json"
    if manifest_file.is_file():
        manifest = read_json(manifest_file, "adapter manifest")
    version = str(manifest.get("version") or path.name)
    train_date = str(manifest.get("train_date") or manifest.get("created_at") or "")
    return AdapterRef(domain=domain, version=version, path=str(path), train_date=train_date)


def latest_adapter(warehouse: Warehouse, domain: str) -> AdapterRef:
    """The newest version training registered for the domain (warehouse table `adapters`)."""
    rows = warehouse.query(
        "select version, path, manifest_json from adapters where domain = ? order by created_at desc limit 1",
        [domain],
    )
    if rows.empty:
        raise AdapterNotFoundError(f"no adapter registered for domain {domain!r} in the warehouse table 'adapters'")
    return _ref_from_row(domain, rows.iloc[0])


def registered_adapter(warehouse: Warehouse, domain: str, version: str) -> AdapterRef | None:
    rows = warehouse.query(
        "select version, path, manifest_json from adapters where domain = ? and version = ? "
        "order by created_at desc limit 1",
        [domain, version],
    )
    return None if rows.empty else _ref_from_row(domain, rows.iloc[0])


def _ref_from_row(domain: str, row) -> AdapterRef:
    try:
        manifest = json.loads(row["manifest_json"] or "{}")
    except (TypeError, json.JSONDecodeError):
        manifest = {}
    train_date = str(manifest.get("train_date") or manifest.get("created_at") or "")
    return AdapterRef(domain=domain, version=str(row["version"]), path=str(row["path"]), train_date=train_date)
