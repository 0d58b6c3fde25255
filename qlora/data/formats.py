"""Row formats users hand in, normalised to chat `messages` ([{role, content}, ...]).

seed     {"instruction", "output"}
alpaca   {"instruction", "input", "output"}        (input appended to the user turn)
chat     {"messages": [{"role", "content"}]}
sharegpt {"conversations": [{"from", "value"}]}    (human/gpt/system)

Each row may carry `license` (or `licence`); otherwise the file's sidecar `<file>.license`
(one identifier) applies; otherwise the licence is `unknown`. Problems raise `RowError`
with a reason code; the reader turns it into a quarantine entry with file and line.
"""
from __future__ import annotations

from typing import Any

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
UNKNOWN_LICENCE = "unknown"


class RowError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _text(row: dict, field: str, required: bool = True) -> str | None:
    if field not in row or row[field] is None:
        if required:
            raise RowError("missing_field", f"field '{field}' is missing")
        return None
    value = row[field]
    if not isinstance(value, str):
        raise RowError("wrong_type", f"field '{field}' must be a string, got {type(value).__name__}")
    return value


def _turns(items: Any, field: str, role_key: str, text_key: str, role_map: dict[str, str]) -> list[dict]:
    if not isinstance(items, list):
        raise RowError("wrong_type", f"field '{field}' must be a list, got {type(items).__name__}")
    if not items:
        raise RowError("missing_field", f"field '{field}' is empty")
    messages = []
    for i, turn in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RowError("wrong_type", f"field '{where}' must be an object")
        role, content = turn.get(role_key), turn.get(text_key)
        if role is None or content is None:
            missing = role_key if role is None else text_key
            raise RowError("missing_field", f"field '{where}.{missing}' is missing")
        if not isinstance(role, str) or not isinstance(content, str):
            raise RowError("wrong_type", f"field '{where}' needs string '{role_key}' and '{text_key}'")
        if role not in role_map:
            raise RowError("wrong_type", f"field '{where}.{role_key}' has unknown role {role!r}")
        messages.append({"role": role_map[role], "content": content})
    if messages[-1]["role"] != "assistant":
        raise RowError("missing_field", f"field '{field}' has no final assistant turn")
    return messages


def detect_format(row: dict) -> str:
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "input" in row:
        return "alpaca"
    return "seed"


def normalise(row: Any) -> tuple[str, list[dict]]:
    """(format name, messages) for one parsed row; raises RowError."""
    if not isinstance(row, dict):
        raise RowError("wrong_type", f"row must be a JSON object, got {type(row).__name__}")
    fmt = detect_format(row)
    if fmt == "chat":
        return fmt, _turns(row["messages"], "messages", "role", "content", {r: r for r in ROLES})
    if fmt == "sharegpt":
        return fmt, _turns(row["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False) if fmt == "alpaca" else None
    output = _text(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return fmt, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def row_licence(row: Any, file_licence: str | None) -> str:
    if isinstance(row, dict):
        value = row.get("license", row.get("licence"))
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    return (file_licence or UNKNOWN_LICENCE).strip().lower()


def split_turns(messages: list[dict]) -> tuple[str, str]:
    """(instruction, output): every turn before the last assistant turn, and that turn."""
    *context, last = messages
    return "\n".join(m["content"] for m in context), last["content"]
