"""Where the corpus lives: ``<root>/stories/<group>/`` and ``<root>/encyclopedia/<category>/<subcategory>/``.

The root is ``$DISTILLERY_CORPUS_ROOT`` when set (so users can point the platform at the corpus they already
have), else ``data_dir()/corpus``; an explicit override (asset config) wins over both.
"""

from __future__ import annotations

import os
import time
from enum import Enum
from pathlib import Path

from distillery_assets.io.atomic import TMP_PREFIX
from distillery_assets.paths import data_dir, safe_child

CORPUS_ROOT_ENV = "DISTILLERY_CORPUS_ROOT"
PROMPTS_FILE = "prompts.txt"
CORPUS_SUFFIX = ".corpus"


class CorpusKind(str, Enum):
    """The two halves of the corpus; the value is the top-level directory name."""

    STORIES = "stories"
    ENCYCLOPEDIA = "encyclopedia"


def corpus_root(override: str | os.PathLike | None = None) -> Path:
    """The corpus root directory (created if missing)."""
    chosen = override or os.environ.get(CORPUS_ROOT_ENV) or data_dir() / "corpus"
    root = Path(chosen).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def partition_dir(root: Path, kind: CorpusKind, key: str) -> Path:
    """``<root>/<kind>/<key>``; the key comes from the tables, so it still goes through ``safe_child``."""
    return safe_child(root / kind.value, key, source=f"{kind.value} partition key")


def stale_temp_files(directory: Path, *, min_age_s: float = 600.0) -> list[Path]:
    """Temporary siblings of ``.corpus`` files left behind by a killed run (older than ``min_age_s``)."""
    if not directory.is_dir():
        return []
    cutoff = time.time() - min_age_s
    return sorted(
        p
        for p in directory.rglob(f"{TMP_PREFIX}*{CORPUS_SUFFIX}-*")
        if p.is_file() and p.stat().st_mtime < cutoff
    )
