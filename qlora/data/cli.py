"""`qlora validate-data` (the seed's CI step) and `qlora sample-data`.

validate-data exit codes: 0 all blocking checks pass, 1 a blocking check fails,
2 the input cannot be read at all.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _verdicts(path: Path, domain: str) -> tuple[dict, list]:
    import pandas as pd

    from qlora.data import schemas
    from qlora.data.cleaning import clean_rows
    from qlora.data.config import load_data_config
    from qlora.data.measure import load_base_tokenizer
    from qlora.data.reader import SYMLINK, count_records, data_files, read_domain, read_file

    files = data_files(path) if path.is_dir() else [path]
    read = read_domain(path) if path.is_dir() else read_file(path)
    config = load_data_config()
    rules = config.rules(domain)
    result = clean_rows(read.rows_frame(), rules, config.detector_languages(), tokenizer=load_base_tokenizer())
    quarantined = read.quarantine_frame()
    links = quarantined[quarantined["reason"] == SYMLINK]  # files not read: not rows
    quarantined = quarantined[quarantined["reason"] != SYMLINK]
    per_file = pd.DataFrame({
        "source_file": list(read.rows_in),
        "rows_in": [count_records(f) if count_records(f) is not None else read.rows_in[n]
                    for f, n in zip(files, read.rows_in)],
        "rows_read": [int((read.rows_frame()["source_file"] == n).sum() + (quarantined["source_file"] == n).sum())
                      for n in read.rows_in],
    })
    acc = result.accounting()
    raw_reasons = quarantined.groupby("reason").size().to_dict()
    accounting = {
        "input": str(path), "domain": domain, "rows_read": sum(read.rows_in.values()), "kept": acc["kept"],
        "duplicates_removed": acc["duplicates_removed"],
        "quarantined": {**{k: int(v) for k, v in raw_reasons.items()}, **acc["quarantined"]},
        "tokenizer": result.stats["tokenizer"], "links_not_followed": list(links["source_file"]),
    }
    accounting["balanced"] = accounting["rows_read"] == (
        accounting["kept"] + accounting["duplicates_removed"] + sum(accounting["quarantined"].values()))
    verdicts = [
        schemas.rows_accounted(per_file), schemas.duplicates(result.kept, result.stats, rules),
        schemas.token_lengths(result.kept, rules, result.stats["tokenizer"]), schemas.pii_residual(result.kept),
        schemas.licences(result.kept, rules), schemas.target_language(result.kept, result.stats, rules),
        schemas.has_rows(result.kept, result.stats["rows_read"]),
    ]
    return accounting, verdicts


def validate_data(
    input: Path = typer.Option(..., "--input", help="a data file (.json/.jsonl) or a domain folder"),
    domain: Optional[str] = typer.Option(None, "--domain", help="rules from configs/domains.yaml (default: folder name)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Read, clean and check a data file; print the accounting and the blocking checks."""
    path = input
    readable = path.is_dir() or (path.is_file() and path.suffix in (".json", ".jsonl"))
    try:
        if readable and path.is_file():
            path.open("rb").close()
    except OSError:
        readable = False
    if not readable:
        typer.echo(f"error: cannot read {path}: need an existing .json/.jsonl file or a domain folder", err=True)
        raise typer.Exit(2)
    domain = domain or (path.name if path.is_dir() else path.parent.name)
    accounting, verdicts = _verdicts(path, domain)
    checks = [{"check": v.name, "passed": v.passed, "failures": v.failures, "rule": v.description,
               **{k: v2 for k, v2 in v.numbers.items()}} for v in verdicts]
    failed = [c["check"] for c in checks if not c["passed"]]
    if as_json:
        typer.echo(json.dumps({"accounting": accounting, "checks": checks, "passed": not failed}, ensure_ascii=False, default=str))
    else:
        typer.echo(f"{accounting['input']} (domain {domain}): {accounting['rows_read']} rows read = "
                   f"{accounting['kept']} kept + {accounting['duplicates_removed']} duplicates + "
                   f"{sum(accounting['quarantined'].values())} quarantined {accounting['quarantined']}")
        for c in checks:
            typer.echo(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['check']}: {c['rule']} ({c['failures']} failures)")
    raise typer.Exit(1 if failed else 0)


def sample_data(data_dir: Optional[Path] = typer.Option(None, help="default: $QLORA_DATA_DIR (data/)")) -> None:
    """Regenerate the sample domains under data/training/ and their eval sets under data/eval/."""
    from qlora.data.sample_data import write_sample_data
    from qlora.core.paths import paths

    counts = write_sample_data(data_dir or paths().data_dir)
    for domain, n in counts.items():
        typer.echo(f"{domain}: {n['train_records']} training records, {n['eval_rows']} eval rows")


def register(app: typer.Typer) -> None:
    app.command("validate-data")(validate_data)
    app.command("sample-data")(sample_data)
