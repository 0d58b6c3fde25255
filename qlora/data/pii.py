"""PII masking: the seed's three patterns (e-mail, phone, RRN) plus card numbers (Luhn-checked)
and the Korean phone forms (mobile, Seoul/area landlines, +82).

Speed: Python's regex engine tries every alternative at every position, so the full
patterns never scan whole rows. E-mails are searched only in text holding an '@'; the
number patterns run only inside candidate spans (a digit run of 8+ characters with
separators), found by one pattern that starts with a character class (a fast C scan).
"""
from __future__ import annotations

import re

EMAIL = r"(?a:\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"
# Resident registration number: YYMMDD-GNNNNNN with a real month/day and gender digit 1-8.
RRN = r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-\s?[1-8]\d{6}(?!\d)"
CARD = r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"
PHONE = "|".join(
    [
        r"\+82[-. ]?\(?0?\)?1[016789][-. ]?\d{3,4}[-. ]?\d{4}(?!\d)",  # +82 10-1234-5678
        r"(?<!\d)01[016789][-. ]?\d{3,4}[-. ]?\d{4}(?!\d)",  # 010-1234-5678, 01012345678
        r"(?<!\d)\(?0(?:2|[3-6][1-5])\)?[-. ]?\d{3,4}[-. ]\d{4}(?!\d)",  # 02-123-4567, (031) 123-4567
        r"\b\d{3}[-.]?\d{4}[-.]?\d{4}\b",  # the seed's pattern
    ]
)
# Order matters: an RRN or card would otherwise be cut up by the looser phone patterns.
NUMBER_PII = re.compile(f"(?P<RRN>{RRN})|(?P<CARD>{CARD})|(?P<PHONE>{PHONE})")
EMAIL_PATTERN = re.compile(EMAIL)
_CANDIDATE = re.compile(r"[+(\d][\d ().-]{6,}\d")
_PREFILTER_DIGITS = re.compile(r"\d\d\d")
KINDS = ("EMAIL", "RRN", "CARD", "PHONE")


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pii(text: str) -> tuple[str, int]:
    """Returns the masked text and how many spans were masked (0: the same string object)."""
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        kind = match.lastgroup
        if kind == "CARD" and not luhn_valid(match.group()):
            # A long number that is not a card (order id): keep it, except an RRN or phone inside
            # it ("800 900101-1234567" reads as one 16-digit run, but holds an RRN).
            inner, n = _mask_rrn_and_phones(match.group())
            count += n
            return inner
        count += 1
        return f"[{kind}]"

    def mask_candidate(match: re.Match) -> str:
        return NUMBER_PII.sub(replace, match.group())

    if "@" in text:
        text, n = EMAIL_PATTERN.subn("[EMAIL]", text)
        count += n
    if _PREFILTER_DIGITS.search(text):
        text = _CANDIDATE.sub(mask_candidate, text)
    return text, count


_RRN_OR_PHONE = re.compile(f"(?P<RRN>{RRN})|(?P<PHONE>{PHONE})")


def _mask_rrn_and_phones(text: str) -> tuple[str, int]:
    return _RRN_OR_PHONE.subn(lambda m: f"[{m.lastgroup}]", text)
