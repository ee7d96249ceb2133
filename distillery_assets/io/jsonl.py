"""Reading JSONL with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSONL line that is not a JSON object; carries the file and 1-based line number."""

    def __init__(self, path: Path, line: int, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


def iter_jsonl(path: Path, *, on_error: str = "raise") -> Iterator[tuple[int, dict[str, Any] | JsonlError]]:
    """Yield ``(line_number, record)`` for each non-blank line.

    ``on_error="raise"`` raises :class:`JsonlError` on the first bad line; ``"yield"`` yields the
    error object in place of the record so the caller can log it as a reject and go on.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
                if not isinstance(value, dict):
                    raise ValueError(f"expected a JSON object, got {type(value).__name__}")
            except (UnicodeDecodeError, ValueError) as exc:
                error = JsonlError(path, number, f"malformed JSONL line: {exc}")
                if on_error == "raise":
                    raise error from exc
                yield number, error
                continue
            yield number, value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in iter_jsonl(path)]  # type: ignore[misc]
