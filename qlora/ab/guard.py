"""The rule the deploy path asks before production moves: for a domain that requires an A/B
(``required_for_domains`` in configs/ab.yaml), only a version with a ``promote`` decision may
take the production alias. A domain without the requirement deploys on the gate alone."""
from __future__ import annotations

from qlora.ab.config import default_config_path, load_ab_config
from qlora.ab.records import has_promote_decision
from qlora.core.warehouse import Warehouse


def promotion_verdict(warehouse: Warehouse, domain: str, version: str, config=None) -> tuple[bool, str]:
    if config is None:
        if not default_config_path().is_file():
            return True, "no configs/ab.yaml: A/B not required"
        config = load_ab_config()
    if domain not in config.required_for_domains:
        return True, f"A/B not required for {domain}"
    if has_promote_decision(warehouse, domain, version):
        return True, f"A/B promote decision recorded for {domain}@{version}"
    return False, (f"{domain} requires an online A/B before production (configs/ab.yaml required_for_domains) "
                   f"and {domain}@{version} has no 'promote' decision: run `qlora ab start --domain {domain}`")
