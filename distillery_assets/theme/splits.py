"""Train/validation split of the ChatML examples and the checks a split must pass."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def split_examples(records: Sequence[dict[str, Any]], train_ratio: float = 0.9, seed: int = 42):
    """Shuffle a copy with ``random.Random(seed)`` and cut at ``int(n * train_ratio)`` (the seed's rule)."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * train_ratio)
    return shuffled[:cut], shuffled[cut:]


def example_key(record: dict[str, Any]) -> tuple[str, int]:
    meta = record.get("metadata", {})
    return str(meta.get("chunk_id")), int(meta.get("example_index", 0))


def record_problems(records: Sequence[dict[str, Any]], name: str) -> list[str]:
    """Shape problems of ChatML records (system, user, assistant; non-empty; metadata with chunk id)."""
    problems = []
    for i, record in enumerate(records, start=1):
        messages = record.get("messages")
        roles = [m.get("role") for m in messages] if isinstance(messages, list) else None
        if roles != ["system", "user", "assistant"]:
            problems.append(f"{name} record {i}: roles {roles}, expected system/user/assistant")
        elif any(not str(m.get("content", "")).strip() for m in messages):
            problems.append(f"{name} record {i}: empty message")
        if not record.get("metadata", {}).get("chunk_id"):
            problems.append(f"{name} record {i}: metadata.chunk_id missing")
    return problems


def overlap(train: Sequence[dict[str, Any]], val: Sequence[dict[str, Any]]) -> set[tuple[str, int]]:
    return {example_key(r) for r in train} & {example_key(r) for r in val}
