"""Content fingerprints that decide when to retrain: of a domain's training data, and of configs.

Only file *contents* count: a file rewritten with the same bytes, touched, or renamed
keeps the fingerprint, so it never retrains; any changed byte changes it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import xxhash

from qlora.core.paths import discover_domains

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """128-bit xxh3 of a file's bytes, read in chunks so large data files stay out of memory."""
    hasher = xxhash.xxh3_128()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _visible_files(folder: Path) -> list[Path]:
    # Dotfiles are editor swap files and the like, not training data.
    return [
        p for p in folder.rglob("*")  # a symlink is never followed out of the data root (the reader skips it too)
        if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def combine(digests: Iterable[str]) -> str:
    """One fingerprint for a set of file digests, independent of order and of names."""
    hasher = xxhash.xxh3_128()
    for digest in sorted(digests):
        hasher.update(digest.encode())
    return hasher.hexdigest()[:16]


def domain_files(training_dir: Path, domain: str, eval_dir: Path | None = None) -> list[Path]:
    """Everything that feeds one domain's adapter: ``training/<domain>/**`` and ``eval/<domain>.*``.

    The eval set counts because it decides the split and the contamination check.
    """
    files = _visible_files(training_dir / domain)
    if eval_dir is not None and eval_dir.is_dir():
        files += [p for p in eval_dir.glob(f"{domain}.*") if p.is_file()]
    return files


def domain_fingerprint(training_dir: Path, domain: str, eval_dir: Path | None = None) -> str:
    return combine(file_digest(p) for p in domain_files(training_dir, domain, eval_dir))


def newest_change(training_dir: Path, domain: str, eval_dir: Path | None = None) -> float:
    """Latest modification time among a domain's files (0 when it has none)."""
    return max((p.stat().st_mtime for p in domain_files(training_dir, domain, eval_dir)), default=0.0)


def data_fingerprints(training_dir: Path, eval_dir: Path | None = None) -> dict[str, str]:
    """Fingerprint of every domain folder under ``training_dir`` (a domain is a folder)."""
    # The same rule as the raw reader: a misnamed or symlinked domain folder is an error naming it.
    return {domain: domain_fingerprint(training_dir, domain, eval_dir) for domain in discover_domains(training_dir)}


def config_files(config_dir: Path) -> list[Path]:
    """Every training profile and the default gate: what the base model build depends on."""
    files = sorted((config_dir / "qlora").glob("*.yaml"))
    gate = config_dir / "quality_gate.yaml"
    if gate.is_file():
        files.append(gate)
    return files


def config_fingerprint(config_dir: Path) -> str:
    """Fingerprint of the training profiles and the quality gate (the base build's retry key).

    Here names do count: moving a setting from one profile to another is a change.
    """
    hasher = xxhash.xxh3_128()
    for path in config_files(config_dir):
        hasher.update(str(path.relative_to(config_dir)).encode() + b"\0" + file_digest(path).encode())
    return hasher.hexdigest()[:16]


def _optional_digest(path: Path) -> str:
    # A missing file is a state too (the run would fail on it); it must differ from any content.
    return file_digest(path) if path.is_file() else "missing"


def domain_config_fingerprint(profile: Path, gate: Path, domain_rules: dict) -> str:
    """What one domain's runs read from configs: the training profile in use, the gate file in use,
    and the domain's resolved entry of domains.yaml (defaults merged), nothing else.

    Editing an unused profile, or another domain's entry, leaves it unchanged.
    """
    hasher = xxhash.xxh3_128()
    for part in (str(profile), _optional_digest(profile), str(gate), _optional_digest(gate),
                 json.dumps(domain_rules, sort_keys=True, default=str)):
        hasher.update(part.encode() + b"\0")
    return hasher.hexdigest()[:16]
