"""The one YAML loader: read a file, optionally validate it with a pydantic model, and name the file and
the field in every error.

    load_yaml(path)                       -> the parsed document (any YAML value)
    load_yaml(path, Model)                -> Model instance
    load_yaml(path, Model, prefix="profiles.full")   # field paths in errors start with the prefix
    parse_yaml(text, path=path)           -> parse text already read from path (errors name path)
    validate_yaml(raw, Model, path=path)  -> validate an already-read (sub)document the same way

Each pipeline raises its own error type (a subclass of ``ConfigFileError`` or any exception class taking
one message) by passing ``error=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config file is missing, unreadable, not YAML, or fails validation; the message names file and field."""


def field_problems(exc: ValidationError, prefix: str = "") -> str:
    """``a.b.0: message; c: message`` from a pydantic ValidationError."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        where = ".".join(p for p in (prefix, loc) if p) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def read_yaml(path: str | Path, *, error: type[Exception] = ConfigFileError, what: str = "config file") -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 ({exc})") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    return parse_yaml(text, path=path, error=error)


def parse_yaml(text: str, *, path: str | Path, error: type[Exception] = ConfigFileError) -> Any:
    """Parse YAML text already read from ``path`` (for callers that check the text first)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def validate_yaml(raw: Any, model: type[M], *, path: str | Path, prefix: str = "",
                  error: type[Exception] = ConfigFileError) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path}: {field_problems(exc, prefix)}") from exc


def load_yaml(path: str | Path, model: type[M] | None = None, *, prefix: str = "",
              error: type[Exception] = ConfigFileError, what: str = "config file") -> Any:
    raw = read_yaml(path, error=error, what=what)
    if model is None:
        return raw
    return validate_yaml(raw, model, path=path, prefix=prefix, error=error)
