"""Turn a model's reply into a dict validated against the request's JSON Schema, or say why not."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class JSONReplyError(ValueError):
    """The reply is not JSON, or not JSON that matches the schema. ``raw`` keeps the model's text."""

    def __init__(self, reason: str, raw: str):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def _candidates(text: str) -> list[str]:
    out = [text.strip()]
    out += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start:end + 1])
    return out


def schema_instruction(schema: dict[str, Any]) -> str:
    """Prompt text for providers with no schema-constrained mode (fal router, plain json_object servers)."""
    return ("Answer with one JSON object and nothing else. It must validate against this JSON Schema:\n"
            + json.dumps(schema, sort_keys=True))


def with_schema_instruction(system: str, schema: dict[str, Any]) -> str:
    return (system + "\n\n" if system else "") + schema_instruction(schema)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise jsonschema.SchemaError when the request's schema itself is invalid."""
    jsonschema.validators.validator_for(schema).check_schema(schema)


def parse_json_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The first JSON object found in ``text`` (bare, fenced, or the outermost {...}) that validates."""
    first_error = None
    for candidate in _candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError as exc:
            first_error = first_error or f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            continue
        if not isinstance(value, dict):
            first_error = first_error or f"JSON is a {type(value).__name__}, not an object"
            continue
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return value
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return_reason = f"JSON does not match the schema at {where}: {error.message}"
        raise JSONReplyError(return_reason, text)
    raise JSONReplyError(first_error or "empty reply", text)
