"""Declarative automation for the tail of the graph: eval, gate and deploy follow a new adapter.

A retrain_domain run already carries them, so these conditions matter when someone
materialises part of a domain by hand (e.g. re-runs ``qlora_adapter`` after a fix in the UI):
the adapter is then evaluated, gated and, only if every blocking check upstream passed,
deployed, without anyone launching those steps. The conditions are set on assets owned by
other areas, so they are applied to the merged Definitions rather than in each asset's module.

The data assets and ``qlora_adapter`` get none: training is what the sensors and the weekly
schedule decide, and ``base_model`` is built by the training-data sensor when missing (an
``on_missing`` here would race it and build the base twice on a fresh instance).
"""
import dagster as dg

FOLLOWS_UPSTREAM = ("eval_report", "gate_decision", "deployed_adapter")


def follow_upstream() -> dg.AutomationCondition:
    # eager(): run after any parent updates, never while a parent is missing or in progress.
    # all_deps_blocking_checks_passed(): a blocked gate (a failed blocking check) stops here,
    # so a deploy is never launched on a block, even outside the run that made the decision.
    return (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
        "eager, upstream blocking checks passed"
    )


def apply_automation_conditions(defs: dg.Definitions) -> dg.Definitions:
    """Return ``defs`` with the conditions above set on the assets that exist in it."""
    present = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    targets = [name for name in FOLLOWS_UPSTREAM if name in present]
    if not targets:
        return defs
    return defs.map_resolved_asset_specs(
        func=lambda spec: spec.replace_attributes(automation_condition=follow_upstream()),
        selection=dg.AssetSelection.assets(*targets),
    )
