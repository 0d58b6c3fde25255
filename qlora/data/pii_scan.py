"""An independent PII re-scan of cleaned rows, for the blocking PII check.

Deliberately written apart from `pii.py` and broader than it: it flags anything that
looks like an e-mail address, an RRN, or a run of 9+ digits (separators allowed; phones,
cards, account numbers). A masking bug, or PII of a form the masker does not know, shows
up here as a residual instead of passing silently.
"""
from __future__ import annotations

import re

_SUSPECTS = {
    "email": re.compile(r"[^\s@\[\]]+@[^\s@\[\]]+\.[A-Za-z]{2,}"),
    "rrn": re.compile(r"\d{6}\s*-\s*\d{7}"),
    "long_number": re.compile(r"(?:\+?\d[\s().-]{0,2}){9,}"),
}


def pii_findings(text: str) -> list[str]:
    """Kinds of PII-looking spans left in the text, e.g. ['email']; [] when clean."""
    return [kind for kind, pattern in _SUSPECTS.items() if pattern.search(text)]
