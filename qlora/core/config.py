"""One way to read a YAML config into a typed model, with errors that name the file and field.

Every area's config (eval, gate, deploy, schedule, ...) is a pydantic model; a user's mistake
must come back as `<file>: field '<a.b>': <what is wrong>`, not as a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """`field 'a.b': message; field 'c': message` for every problem pydantic found."""
    return "; ".join(
        f"field '{'.'.join(str(part) for part in err['loc']) or '(top level)'}': {err['msg']}"
        for err in exc.errors()
    )


def read_yaml_mapping(path: Path, error: type[Exception] = ValueError) -> dict:
    """The YAML file as a dict (empty file = {}); bad YAML or a non-mapping raises ``error``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def validate_mapping(model: type[Model], raw: dict, source: Path | str, error: type[Exception] = ValueError) -> Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{source}: {describe_validation_error(exc)}") from None


def load_yaml_model(model: type[Model], path: Path, error: type[Exception] = ValueError) -> Model:
    """Read and validate ``path``; a missing file raises ``error`` naming it."""
    if not path.is_file():
        raise error(f"{path}: config file not found")
    return validate_mapping(model, read_yaml_mapping(path, error), path, error)
