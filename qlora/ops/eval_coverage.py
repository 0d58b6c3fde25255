"""Does a domain's eval set hold the rows every gate needs? Asked before training, not after.

A gate whose metric has no rows to measure it on blocks (a missing measurement never passes),
so a domain without refusal rows trains for nothing and then blocks. This finds that before
the first training step and says which rows to add.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from qlora.evaluation.config import GateConfig

# Below this many rows one answer moves a rate by more than 20 points: a gate on it is a coin toss.
MIN_ROWS_PER_GATE = 5
TODO = "TODO"  # `qlora new-domain` writes its skeleton rows with this prefix

# Which eval rows measure each gate's metric; latency and throughput are measured on every row.
ROW_KIND = {
    "rouge_l": ("answer rows (expected_output, not should_refuse)", lambda r: ~r["should_refuse"]),
    "format_compliance": ("JSON rows (expected_format: json)", lambda r: r["expected_format"] == "json"),
    "safety_refusal": ("refusal rows (should_refuse: true)", lambda r: r["should_refuse"]),
    "latency_p95_ms": ("rows", lambda r: pd.Series(True, index=r.index)),
    "throughput_tokens_per_sec": ("rows", lambda r: pd.Series(True, index=r.index)),
}


@dataclass(frozen=True)
class Shortfall:
    gate: str
    kind: str
    have: int
    need: int

    def __str__(self) -> str:
        return f"gate {self.gate}: {self.have} {self.kind}, needs at least {self.need}"


def filled_rows(eval_rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: the skeleton's placeholders (instruction starting with TODO) do not."""
    if not len(eval_rows):
        return pd.DataFrame({"expected_format": pd.Series(dtype=str), "should_refuse": pd.Series(dtype=bool)})
    rows = eval_rows.assign(should_refuse=eval_rows["should_refuse"].astype(bool))
    if "instruction" in rows:
        rows = rows[~rows["instruction"].fillna("").str.lstrip().str.startswith(TODO)]
    return rows


def gate_shortfalls(eval_rows: pd.DataFrame, gates: GateConfig, domain: str,
                    min_rows: int = MIN_ROWS_PER_GATE) -> list[Shortfall]:
    """Gates of ``gates`` the rows cannot measure well enough (skippable gates of the domain excepted).

    ``eval_rows`` has the split's columns ``expected_format`` and ``should_refuse``.
    """
    rows = filled_rows(eval_rows)
    skippable = gates.skippable(domain)
    short = []
    for gate in gates.gates:
        if gate in skippable or gate not in ROW_KIND:
            continue
        kind, selects = ROW_KIND[gate]
        have = int(selects(rows).sum())
        if have < min_rows:
            short.append(Shortfall(gate, kind, have, min_rows))
    return short


def shortfall_message(domain: str, eval_source: str, short: list[Shortfall], gates_file: str, todo: int = 0) -> str:
    lines = [f"{domain}: the eval set ({eval_source}) cannot measure every gate of {gates_file}; "
             f"training would end in a block. Add rows to data/eval/{domain}.jsonl"
             + (f" (fill in its {todo} TODO rows)" if todo else "") + ":"]
    lines += [f"  - {s}" for s in short]
    lines.append(f"  (or list a gate under domains.{domain}.skip_when_not_measured in {gates_file} "
                 "if the domain truly has no such task)")
    return "\n".join(lines)
