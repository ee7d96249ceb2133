"""Small file helpers the poetry pipeline needs on top of :mod:`distillery_assets.io`."""

from __future__ import annotations

import json
from pathlib import Path

from distillery_assets.io import atomic_write_jsonl, read_jsonl


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record by rewriting the file atomically (small files only: session logs)."""
    path = Path(path)
    existing = read_jsonl(path) if path.exists() else []
    atomic_write_jsonl(path, [*existing, record])


def dumps_preview(records: list[dict], limit: int = 3, width: int = 400) -> str:
    """A short JSON preview for metadata (first ``limit`` records, long strings cut)."""

    def cut(value):
        if isinstance(value, str) and len(value) > width:
            return value[:width] + "…"
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value

    return json.dumps([cut(r) for r in records[:limit]], ensure_ascii=False, indent=1)
