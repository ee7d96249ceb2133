"""Reading JSONL with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSONL line that is not a JSON object; carries the file, the 1-based line number and, when the line did
    not parse, the exception that said why (``cause``: UnicodeDecodeError, json.JSONDecodeError or ValueError)."""

    def __init__(self, path: Path, line: int, reason: str, cause: Exception | None = None):
        self.path, self.line, self.reason, self.cause = Path(path), line, reason, cause
        super().__init__(f"{path}:{line}: {reason}")


def iter_jsonl_lines(lines: Iterable[str | bytes], path: Path, *, on_error: str = "raise",
                     objects: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of ``lines`` (already read from ``path``, which
    errors name). ``objects``: every value must be a JSON object (``False``: any JSON value).

    ``on_error="raise"`` raises :class:`JsonlError` on the first bad line; ``"yield"`` yields the
    error object in place of the record so the caller can log it as a reject and go on.
    """
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            if objects and not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        except (UnicodeDecodeError, ValueError) as exc:
            error = JsonlError(path, number, f"malformed JSONL line: {exc}", exc)
            if on_error == "raise":
                raise error from exc
            yield number, error
            continue
        yield number, value


def iter_jsonl(path: Path, *, on_error: str = "raise", objects: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` for each non-blank line of the file, read as it goes (see
    :func:`iter_jsonl_lines` for ``on_error`` and ``objects``)."""
    path = Path(path)
    with open(path, "rb") as fh:
        yield from iter_jsonl_lines(fh, path, on_error=on_error, objects=objects)


def read_jsonl(path: Path, *, objects: bool = True) -> list[Any]:
    """Every record of the file (``objects=False``: any JSON value per line); a bad line raises
    :class:`JsonlError` naming the file and line."""
    return [record for _, record in iter_jsonl(path, objects=objects)]
