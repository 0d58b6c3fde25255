"""An eval set as the runner needs it: the conversation to send and what to score it against.

Rows are `data/eval/<domain>.jsonl` lines with `instruction` (optionally
`input`) or `messages`, plus `expected_output`, optional `expected_format: json`
and `should_refuse: true`. The conversation ends with the user's turn; the
server applies the base model's chat template (the seed sent raw text).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from qlora.core.io import JsonInputError, read_records


class EvalSetError(ValueError):
    """A row of an eval set that cannot be evaluated; the message names file, line and field."""


@dataclass(frozen=True)
class EvalCase:
    source: str
    line: int
    messages: tuple[dict[str, str], ...]
    expected_output: str | None
    expects_json: bool
    should_refuse: bool


def _conversation(row: dict[str, Any], where: str) -> tuple[dict[str, str], ...]:
    if isinstance(row.get("messages"), list) and row["messages"]:
        turns = [dict(m) for m in row["messages"]]
        for i, turn in enumerate(turns):
            if not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
                raise EvalSetError(f"{where}: field 'messages[{i}]' needs string 'role' and 'content'")
        # A trailing assistant turn is the reference answer, not part of the prompt.
        if turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if not turns or turns[-1]["role"] != "user":
            raise EvalSetError(f"{where}: field 'messages' must end with a user turn (before any answer)")
        return tuple({"role": t["role"], "content": t["content"]} for t in turns)
    instruction = row.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise EvalSetError(f"{where}: needs a non-empty 'instruction' or a 'messages' list")
    extra = row.get("input")
    content = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return ({"role": "user", "content": content},)


def _reference(row: dict[str, Any], where: str) -> str | None:
    expected = row.get("expected_output")
    if expected is None and isinstance(row.get("messages"), list) and row["messages"]:
        last = row["messages"][-1]
        if isinstance(last, dict) and last.get("role") == "assistant":
            expected = last.get("content")
    if expected is not None and not isinstance(expected, str):
        # JSON answers are sometimes stored as objects; compare against their text.
        expected = json.dumps(expected, ensure_ascii=False)
    if expected is None and not row.get("should_refuse"):
        raise EvalSetError(f"{where}: field 'expected_output' is missing (only should_refuse rows may omit it)")
    return expected


def case_from_row(row: dict[str, Any], source: str, line: int) -> EvalCase:
    where = f"{source}:{line}"
    if not isinstance(row, dict):
        raise EvalSetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    fmt = row.get("expected_format")
    if fmt not in (None, "json", "text"):
        raise EvalSetError(f"{where}: field 'expected_format' must be 'json' or absent, got {fmt!r}")
    refuse = row.get("should_refuse", False)
    if not isinstance(refuse, bool):
        raise EvalSetError(f"{where}: field 'should_refuse' must be true or false, got {refuse!r}")
    return EvalCase(
        source=source,
        line=line,
        messages=_conversation(row, where),
        expected_output=_reference(row, where),
        expects_json=fmt == "json",
        should_refuse=refuse,
    )


def load_eval_cases(path: str | Path) -> list[EvalCase]:
    """Read a JSONL (or JSON array) eval set; any bad row fails naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise EvalSetError(f"{path}: eval set not found")
    try:
        numbered = read_records(path)  # JSONL, or a JSON array (a file starting with '[')
    except JsonInputError as exc:
        raise EvalSetError(str(exc)) from None
    cases = [case_from_row(row, str(path), number) for number, row in numbered]
    if not cases:
        raise EvalSetError(f"{path}: eval set has no rows")
    return cases


def cases_from_rows(rows: list[dict[str, Any]], source: str) -> list[EvalCase]:
    """Cases from row dicts (e.g. the data area's `load_eval_rows`); `line` is the row's position."""
    cases = []
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        # The split stores "text" for plain rows and may carry NaN for a missing reference.
        if not row.get("expected_format"):
            row.pop("expected_format", None)
        if isinstance(row.get("expected_output"), float):
            row["expected_output"] = None
        row["should_refuse"] = bool(row.get("should_refuse", False))
        cases.append(case_from_row(row, source, number))
    if not cases:
        raise EvalSetError(f"{source}: eval set has no rows")
    return cases
