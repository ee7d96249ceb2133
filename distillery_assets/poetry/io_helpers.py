"""Small file helpers the poetry pipeline needs on top of :mod:`distillery_assets.io`."""

from __future__ import annotations

from pathlib import Path

from distillery_assets.io import atomic_write_jsonl, read_jsonl


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record by rewriting the file atomically (small files only: session logs)."""
    path = Path(path)
    existing = read_jsonl(path) if path.exists() else []
    atomic_write_jsonl(path, [*existing, record])
