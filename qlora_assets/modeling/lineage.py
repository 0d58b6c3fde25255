"""The base that downstream assets use: the one the `base_model` asset last materialised.

Cleaning, training and eval read it from the materialisation (lineage), not from a profile
name of their own, so they cannot disagree with each other or with the base_model resource.
"""
from __future__ import annotations

import dagster as dg

from qlora.modeling.base_model import BaseModelError, read_fingerprint
from qlora.modeling.profiles import selected_profile

BASE_MODEL = dg.AssetKey("base_model")


def materialized_base(context) -> dict | None:
    """{profile, fingerprint, model_path} of the latest `base_model` materialisation; before any
    exists in this instance (a bare test instance), the selected profile's record on disk; else None."""
    event = context.instance.get_latest_materialization_event(BASE_MODEL)
    materialization = event.asset_materialization if event is not None else None
    if materialization is not None and "fingerprint" in materialization.metadata:
        md = materialization.metadata
        return {"profile": md["profile"].value, "fingerprint": md["fingerprint"].value,
                "model_path": str(md["path"].value), "source": "base_model materialization"}
    try:
        record = read_fingerprint(selected_profile())
    except BaseModelError:
        return None
    return {**{k: record[k] for k in ("profile", "fingerprint", "model_path")}, "source": "fingerprint.json on disk"}


def materialized_base_or_fail(context) -> dict:
    base = materialized_base(context)
    if base is None:
        raise dg.Failure(f"no base model: materialise `base_model` first (profile {selected_profile()!r})")
    return base
