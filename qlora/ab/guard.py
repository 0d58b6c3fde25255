"""What the deploy path asks before production moves (qlora/deploy/gate_check.py calls it).

- While a domain runs an experiment, nothing else takes its alias: a direct deploy would end
  the experiment behind its back (the weekly cycle still trains and gates, but waits).
- For a domain in ``required_for_domains`` (configs/ab.yaml), only a version with a ``promote``
  decision may take production; the very first version of a domain (nothing to compare
  with) deploys on the gate alone.
"""
from __future__ import annotations

from qlora.ab.config import ABConfig, default_config_path, load_ab_config
from qlora.ab.records import has_promote_decision, running_experiment
from qlora.core.warehouse import Warehouse
from qlora.deploy.history import deployed_versions


def promotion_verdict(warehouse: Warehouse, domain: str, version: str,
                      config: ABConfig | None = None) -> tuple[bool, str]:
    if running := running_experiment(warehouse, domain):
        return False, (f"{domain} runs A/B experiment {running.experiment_id} ({running.control} vs "
                       f"{running.candidate}); production moves only on its decision "
                       f"(`qlora ab status --domain {domain}`, or `qlora ab stop`)")
    if config is None:
        if not default_config_path().is_file():
            return True, "no configs/ab.yaml: A/B not required"
        config = load_ab_config()
    if domain not in config.required_for_domains:
        return True, f"A/B not required for {domain}"
    if has_promote_decision(warehouse, domain, version):
        return True, f"A/B promote decision recorded for {domain}@{version}"
    if deployed_versions(warehouse, domain).empty:
        return True, f"first version of {domain}: nothing to compare with online"
    return False, (f"{domain} requires an online A/B before production (configs/ab.yaml required_for_domains) "
                   f"and {domain}@{version} has no 'promote' decision: `qlora ab start --domain {domain}`")
