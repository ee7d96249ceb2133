"""A tiny ChatML data set with a pattern a 135M model learns in a few dozen steps.

Used by tests and the training benchmark to exercise the chain without the LLM-generated data sets:
a terse garden bot answers "Tell me about <plant>." with one fixed-shape line. Validation plants are
not in the training split, so a falling validation loss means the *format* was learned, not memorised.
"""

from __future__ import annotations

import random
from pathlib import Path

from distillery_assets.io import atomic_write_jsonl

SYSTEM = "You are Sprig, a garden helper that answers in one short line."
PLANTS = [
    ("basil", "sun", "daily"), ("fern", "shade", "twice a week"), ("cactus", "sun", "monthly"),
    ("mint", "part shade", "every other day"), ("tomato", "sun", "daily"), ("hosta", "shade", "weekly"),
    ("lavender", "sun", "weekly"), ("ivy", "shade", "weekly"), ("rosemary", "sun", "weekly"),
    ("orchid", "bright shade", "weekly"), ("sage", "sun", "weekly"), ("moss", "shade", "daily"),
    ("thyme", "sun", "weekly"), ("begonia", "part shade", "twice a week"), ("pepper", "sun", "daily"),
    ("violet", "bright shade", "weekly"), ("chive", "sun", "twice a week"), ("aloe", "sun", "monthly"),
    ("lettuce", "part shade", "daily"), ("peony", "sun", "weekly"), ("dill", "sun", "twice a week"),
    ("clover", "part shade", "weekly"), ("oregano", "sun", "weekly"), ("jade", "sun", "monthly"),
    ("parsley", "part shade", "every other day"), ("tulip", "sun", "weekly"), ("spinach", "part shade", "daily"),
    ("yarrow", "sun", "weekly"), ("caladium", "shade", "twice a week"), ("bamboo", "part shade", "daily"),
    ("marigold", "sun", "twice a week"), ("lily", "part shade", "weekly"), ("cress", "shade", "daily"),
    ("daisy", "sun", "weekly"), ("zinnia", "sun", "twice a week"), ("coleus", "shade", "every other day"),
    ("kale", "sun", "twice a week"), ("poppy", "sun", "weekly"), ("sorrel", "part shade", "weekly"),
    ("fennel", "sun", "twice a week"),
]


def demo_record(plant: str, light: str, water: str) -> dict:
    return {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Tell me about {plant}."},
        {"role": "assistant", "content": f"Sprig says: {plant} wants {light}, water {water}. Happy growing!"},
    ]}


def write_demo_chatml(out_dir: Path, *, n_val: int = 8, seed: int = 7) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``val.jsonl`` under ``out_dir``; return their paths."""
    rows = [demo_record(*p) for p in PLANTS]
    random.Random(seed).shuffle(rows)
    out_dir = Path(out_dir)
    train, val = out_dir / "train.jsonl", out_dir / "val.jsonl"
    atomic_write_jsonl(train, rows[n_val:])
    atomic_write_jsonl(val, rows[:n_val])
    return train, val
