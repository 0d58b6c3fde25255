"""One way to read a YAML config into a typed model, with errors that name the file, line and field.

Every area's config (training, serving, eval, gate, deploy, schedule, A/B, ...) is a pydantic model
read through here; a user's mistake comes back as one ``ConfigError``:
`<file> line <n>: field '<a.b>': <what is wrong>`, not as a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the line and the field."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.path, self.line, self.field = path, line, field


class LinedMapping(dict):
    """A YAML mapping that remembers the line of every key (``key_lines[("a", "b")] = 7``)."""

    key_lines: dict[tuple, int]


def _key_lines(node, prefix: tuple = ()) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            path = (*prefix, index)
            lines[path] = value.start_mark.line + 1
            lines.update(_key_lines(value, path))
    return lines


def line_of(key_lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest part of ``loc`` that the file has (a missing field: its parent's line)."""
    for end in range(len(loc), 0, -1):
        if (line := key_lines.get(tuple(loc[:end]))) is not None:
            return line
    return None


def describe_validation_error(exc: ValidationError, key_lines: dict[tuple, int] | None = None) -> str:
    """`line 3: field 'a.b': message; field 'c': message` for every problem pydantic found."""
    parts = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not str(part).startswith("function-"))
        line = line_of(key_lines or {}, loc)
        where = f"line {line}: " if line else ""
        parts.append(f"{where}field '{'.'.join(str(part) for part in loc) or '(top level)'}': {err['msg']}")
    return "; ".join(parts)


def read_yaml_mapping(path: Path, error: type[Exception] = ConfigError) -> LinedMapping:
    """The YAML file as a dict (empty file = {}) that knows each key's line; bad YAML or a non-mapping
    raises ``error`` naming the file and line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path} line 1: expected a mapping of settings, got {type(raw).__name__}")
    mapping = LinedMapping(raw)
    mapping.key_lines = _key_lines(node)
    return mapping


def validate_mapping(model: type[Model], raw: dict, source: Path | str, error: type[Exception] = ConfigError) -> Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        key_lines = getattr(raw, "key_lines", None)
        message = f"{source}: {describe_validation_error(exc, key_lines)}"
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        if issubclass(error, ConfigError):
            raise error(message, source, line_of(key_lines or {}, tuple(first)),
                        ".".join(str(p) for p in first)) from None
        raise error(message) from None


def load_yaml_model(model: type[Model], path: Path, error: type[Exception] = ConfigError) -> Model:
    """Read and validate ``path``; a missing file raises ``error`` naming it."""
    if not path.is_file():
        raise error(f"{path}: config file not found")
    return validate_mapping(model, read_yaml_mapping(path, error), path, error)
