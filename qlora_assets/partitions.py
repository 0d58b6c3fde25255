"""Domains are partitions: one adapter per domain. Dynamic, so a new data folder adds one."""
import dagster as dg

from qlora.core.paths import discover_domains

domain_partitions = dg.DynamicPartitionsDefinition(name="domain")


def register_domains(instance: dg.DagsterInstance, domains: list[str] | None = None) -> list[str]:
    """Add every domain folder (or the given list) as a partition; returns those that were new."""
    wanted = domains if domains is not None else discover_domains()
    known = set(instance.get_dynamic_partitions(domain_partitions.name))
    new = [d for d in wanted if d not in known]
    if new:
        instance.add_dynamic_partitions(domain_partitions.name, new)
    return new
