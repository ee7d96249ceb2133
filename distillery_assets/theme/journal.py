"""Per-chunk checkpoint journal for resumable generation.

One JSON line per finished chunk, holding everything that chunk produced (kept examples, rejects, usage).
A chunk is finished exactly when its line is complete on disk: the line is written in one ``write`` call,
flushed and fsynced, so a run killed mid-write leaves at most one torn last line. On open, a torn last
line is dropped (the file is rewritten atomically without it) and that chunk is simply done again, from
the LLM cache. A bad line anywhere else is corruption and raises an error naming file and line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_text


class JournalError(ValueError):
    pass


class ChunkJournal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete = raw.endswith(b"\n")
        good: list[bytes] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            is_last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            try:
                entry = json.loads(line.decode("utf-8"))
                if not isinstance(entry, dict) or "chunk_id" not in entry:
                    raise ValueError("not a chunk entry")
            except (UnicodeDecodeError, ValueError) as exc:
                if is_last:
                    self.dropped_torn_line = True
                    continue
                raise JournalError(f"{self.path}:{number}: corrupt checkpoint line ({exc})") from exc
            if is_last and not complete:
                self.dropped_torn_line = True  # parsed, but never finished with its newline: redo it
                continue
            good.append(line)
            self.entries[entry["chunk_id"]] = entry
        if self.dropped_torn_line:
            atomic_write_text(self.path, "".join(g.decode("utf-8") + "\n" for g in good))

    def __contains__(self, chunk_id: str) -> bool:
        return chunk_id in self.entries

    def append(self, entry: dict[str, Any]) -> None:
        if entry["chunk_id"] in self.entries:
            raise JournalError(f"{self.path}: chunk {entry['chunk_id']} is already recorded")
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[entry["chunk_id"]] = entry
