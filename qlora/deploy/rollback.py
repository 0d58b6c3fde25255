"""Rollback: put an earlier live version back on the alias, by the same blue-green steps.

A rollback skips the canary (it is urgent, and the target already served
traffic) but still loads, lists and smoke-tests the target before the alias
moves, so a rollback onto weights that no longer load fails safely too.
"""
from __future__ import annotations

from qlora.core.adapters import AdapterRef, adapter_from_path, version_of
from qlora.deploy.config import DeployConfig
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import DeploymentRecord, deployed_versions
from qlora.deploy.serving_state import ServingState
from qlora.core.warehouse import Warehouse
from qlora.serving.endpoint import ServingEndpoint


class RollbackTargetError(LookupError):
    """No version to roll back to; the message says what the history holds."""


def rollback_target(client: ServingEndpoint, warehouse: Warehouse, domain: str, to_version: str | None = None) -> AdapterRef:
    """`to_version`, or the newest version that went live before the one serving now."""
    live = deployed_versions(warehouse, domain)
    if live.empty:
        raise RollbackTargetError(f"no version of {domain!r} was ever deployed; nothing to roll back to")
    current = ServingState(client, warehouse).serving(domain)
    current_version = version_of(current.name) if current else None
    if to_version:
        rows = live[live["version"] == to_version]
        if rows.empty:
            known = ", ".join(dict.fromkeys(live["version"]))
            raise RollbackTargetError(f"{domain}@{to_version} never went live; versions that did: {known}")
    else:
        rows = live[live["version"] != current_version]
        if rows.empty:
            raise RollbackTargetError(
                f"{domain}: only {current_version} ever went live; there is no earlier version to roll back to")
    row = rows.iloc[0]
    ref = adapter_from_path(domain, row["path"])
    return AdapterRef(domain, str(row["version"]), str(row["path"]), ref.train_date)


def rollback(client: ServingEndpoint, warehouse: Warehouse, config: DeployConfig, golden, domain: str,
             to_version: str | None = None, on_step=None) -> DeploymentRecord:
    target = rollback_target(client, warehouse, domain, to_version)
    direct = config.model_copy(update={"strategy": "direct"})
    return Deployer(client, warehouse, direct, golden, on_step=on_step).deploy(target, action="rollback")
