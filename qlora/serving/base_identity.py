"""The fingerprint of the base a server serves: the same value training writes to an adapter's manifest
(``manifest.json`` ``base.fingerprint``), so eval and deploy can refuse an adapter trained on another base.
One rule for both sides lives in qlora/modeling/base_identity.py."""
from __future__ import annotations

from qlora.modeling.base_identity import base_folder_fingerprint as base_fingerprint

__all__ = ["base_fingerprint"]
