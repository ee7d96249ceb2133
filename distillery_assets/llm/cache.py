"""On-disk response cache: one JSON file per request key under ``data_dir()/llm_cache/ab/<key>.json``.

Only successful answers are stored. Files are written atomically, so a crash never leaves a half entry,
and an unreadable entry is treated as a miss (and overwritten by the next success).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_text


_KEY = re.compile(r"[0-9a-f]{64}")


class ResponseCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a sha256 request key: {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        # No fsync: an entry can always be asked for again, and this runs once per answer on the hot path.
        atomic_write_text(self.path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True), durable=False)
