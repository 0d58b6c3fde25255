"""Sticky, deterministic arm assignment: a hash of (experiment, user key) -> a point in [0, 1).

The candidate gets the users whose point falls below its alias weight, so the split is the
alias table's and a user keeps their arm for the whole experiment (across router restarts
and replicas: nothing is stored). A new experiment id reshuffles users, so one experiment's
losers are not the next one's by construction.
"""
from __future__ import annotations

import hashlib

CONTROL, CANDIDATE = "control", "candidate"


def user_point(experiment_id: str, user_key: str) -> float:
    digest = hashlib.sha256(f"{experiment_id}\x00{user_key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def assign_arm(experiment_id: str, user_key: str, candidate_share: float) -> str:
    return CANDIDATE if user_point(experiment_id, user_key) < candidate_share else CONTROL


def user_hash(user_key: str) -> str:
    """What the journal stores instead of the key (an e-mail as `user` must not land on disk)."""
    return hashlib.sha256(f"qlora-user\x00{user_key}".encode("utf-8")).hexdigest()[:16]
