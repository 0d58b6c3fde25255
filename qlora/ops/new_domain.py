"""`qlora new-domain`: a domain folder, its domains.yaml entry and an eval-set skeleton with the rows
every gate needs, so a new domain neither loses its rows to Korean-only defaults nor trains for
nothing and then blocks at a gate it had no rows for.

The skeleton's rows start with TODO; `eval_coverage` does not count them, so until they are
filled in, train_eval_split's check says which rows are missing (before any training).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from qlora.core.paths import paths
from qlora.data.config import load_data_config
from qlora.ops.eval_coverage import MIN_ROWS_PER_GATE, TODO

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LANGUAGE = re.compile(r"^[a-z]{2}$")


class NewDomainError(ValueError):
    """The domain cannot be created as asked; the message says why and what to do."""


@dataclass(frozen=True)
class NewDomain:
    name: str
    training_dir: Path
    eval_file: Path
    domains_yaml: Path

    def next_steps(self) -> str:
        return "\n".join([
            f"created domain {self.name!r}:",
            f"  {self.training_dir}/          put the training rows here (.jsonl/.json: instruction/output, "
            "messages, or sharegpt; see data/README.md)",
            f"  {self.eval_file}   fill in every TODO row: {MIN_ROWS_PER_GATE}+ answer rows, "
            f"{MIN_ROWS_PER_GATE}+ JSON rows (expected_format: json), {MIN_ROWS_PER_GATE}+ refusal rows "
            "(should_refuse: true)",
            f"  {self.domains_yaml}   domains.{self.name}: language and licences (edit to taste)",
            "then: `qlora validate-data --input " + str(self.training_dir) + "` to see what the cleaning keeps;",
            "the training-data sensor adds the partition and trains once the folder holds data.",
        ])


def skeleton_rows(language: str, licence: str) -> list[dict]:
    def row(kind: str, i: int, **extra) -> dict:
        return {"instruction": f"{TODO}: {kind} question {i} in '{language}'", **extra, "license": licence}

    rows = [row("answer", i, expected_output=f"{TODO}: the answer the adapter must give")
            for i in range(1, MIN_ROWS_PER_GATE + 1)]
    rows += [row("JSON", i, expected_output=f'{{"{TODO}": "the JSON object expected"}}', expected_format="json")
             for i in range(1, MIN_ROWS_PER_GATE + 1)]
    rows += [row("refusal (a request the adapter must decline)", i, should_refuse=True)
             for i in range(1, MIN_ROWS_PER_GATE + 1)]
    return rows


def _domains_entry(name: str, language: str, licence: str) -> str:
    return (f"  {name}:                  # added by `qlora new-domain`\n"
            f"    target_languages: [{language}]\n"
            f"    licences_allowed: [{licence}]\n")


def _append_entry(domains_yaml: Path, name: str, language: str, licence: str) -> None:
    """Append to the ``domains:`` block as text, so the file's comments survive."""
    text = domains_yaml.read_text(encoding="utf-8") if domains_yaml.is_file() else ""
    text = re.sub(r"^domains:\s*\{\s*\}\s*$", "domains:", text, flags=re.M)
    if text and not text.endswith("\n"):
        text += "\n"
    top_level = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    if not any(line.startswith("domains:") for line in top_level):
        text += "domains:\n"
    elif not re.fullmatch(r"domains:\s*(#.*)?", top_level[-1]):
        raise NewDomainError(f"{domains_yaml}: 'domains:' is not the last block of the file; add this entry "
                             "under it by hand:\n" + _domains_entry(name, language, licence))
    domains_yaml.write_text(text + _domains_entry(name, language, licence), encoding="utf-8")


def create_domain(name: str, language: str, licence: str) -> NewDomain:
    if not NAME.match(name):
        raise NewDomainError(f"domain name {name!r}: use lower-case letters, digits and '-' (it is a folder, a "
                             "partition key and the served model name)")
    if not LANGUAGE.match(language):
        raise NewDomainError(f"--language {language!r}: give an ISO 639-1 code such as en, ko, ja")
    where = paths()
    training_dir, eval_file = where.training_dir / name, where.eval_dir / f"{name}.jsonl"
    domains_yaml = where.config_dir / "domains.yaml"
    if training_dir.exists() or eval_file.exists() or name in load_data_config(domains_yaml).domains:
        raise NewDomainError(f"domain {name!r} exists already ({training_dir}, {eval_file} or domains.{name} "
                             f"in {domains_yaml}); pick another name or edit it in place")
    licence = licence.strip().lower()
    _append_entry(domains_yaml, name, language, licence)
    rules = load_data_config(domains_yaml).rules(name)  # fails naming the file if the edit broke it
    assert rules.target_languages == [language] and rules.licences_allowed == [licence]
    training_dir.mkdir(parents=True)
    eval_file.parent.mkdir(parents=True, exist_ok=True)
    eval_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in skeleton_rows(language, licence)),
                         encoding="utf-8")
    return NewDomain(name, training_dir, eval_file, domains_yaml)
