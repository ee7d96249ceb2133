"""The users' own judgement of tutor sessions (seed 001's ``scripts/inference/feedback.py``).

After a session the tutor CLI asks for (or takes as flags) a rating, whether the poem was kept, whether the
educator helped, and notes, and :func:`append_feedback` adds one JSON line per session to the feedback file
(``data/inputs/poetry/feedback/feedback.jsonl`` by default: a file the users write, so the catalogue records it
as a source and lineage reaches it). Each line carries the seed's fields, ``{timestamp, user_request,
final_poem, educator_note, generation_brief, revision_count, revision_history, models, user_feedback{rating,
kept_poem, notes, educator_helpful, changes}}``, plus the whole session (``session``).

:func:`read_feedback` reads it back (a malformed line is a reject naming file and line, never skipped in
silence), :func:`summarize` gives sessions, mean rating over time and the kept rate, and :func:`poet_pairs`
turns kept, well-rated sessions into poet training pairs (brief -> final poem).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery_assets.io import JsonlError, atomic_write_bytes, iter_jsonl_lines
from distillery_assets.paths import inputs_dir
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.rejects import Reject


class FeedbackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_rating: int = Field(4, ge=1)
    max_rating: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _order(self) -> FeedbackSettings:
        if self.min_rating > self.max_rating:
            raise ValueError(f"min_rating {self.min_rating} is above max_rating {self.max_rating}")
        return self


def load_feedback_settings(cfg: PoetryConfig | None = None) -> FeedbackSettings:
    return (cfg or PoetryConfig()).read("feedback.yaml", FeedbackSettings)


def feedback_path() -> Path:
    """The default feedback file: ``<inputs>/poetry/feedback/feedback.jsonl``."""
    return inputs_dir() / "poetry" / "feedback" / "feedback.jsonl"


@dataclass(frozen=True)
class UserFeedback:
    rating: int
    kept_poem: bool
    educator_helpful: bool | None = None
    notes: str = ""
    changes: str = ""

    def check(self, settings: FeedbackSettings) -> UserFeedback:
        if not 1 <= self.rating <= settings.max_rating:
            raise ValueError(f"rating {self.rating} is outside 1..{settings.max_rating}")
        return self


def feedback_record(session: dict[str, Any], feedback: UserFeedback, *, now: datetime | None = None) -> dict[str, Any]:
    """One feedback line: the seed's fields, then the whole session."""
    meta = session.get("metadata", {})
    return {
        "timestamp": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "user_request": session["user_request"],
        "final_poem": session["final_poem"],
        "educator_note": session.get("educator_note", ""),
        "generation_brief": session["generation_brief"],
        "revision_count": meta.get("revisions", 0),
        "revision_history": session.get("revision_history", []),
        "models": {"educator": meta.get("model_educator"), "poet": meta.get("model_poet")},
        "user_feedback": asdict(feedback),
        "session": session,
    }


def append_feedback(path: Path, record: dict[str, Any]) -> int:
    """Add ``record`` as one line to ``path`` and return its line number. The file is rewritten atomically (the
    old bytes, kept as they are, plus the new line: a crash leaves the old file or the new one, never half a
    line), under an exclusive lock on a sidecar ``.<name>.lock`` so two sessions ending at once both land."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            old = path.read_bytes() if path.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            atomic_write_bytes(path, old + line)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return old.count(b"\n") + 1


@dataclass(frozen=True)
class FeedbackEntry:
    line: int
    record: dict[str, Any]

    @property
    def feedback(self) -> dict[str, Any]:
        return self.record["user_feedback"]


REQUIRED = ("timestamp", "user_request", "final_poem", "generation_brief", "user_feedback")


def _problem(record: Any, settings: FeedbackSettings) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    fb = record["user_feedback"]
    if not isinstance(fb, dict):
        return "user_feedback is not an object"
    rating = fb.get("rating")
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= settings.max_rating:
        return f"user_feedback.rating {rating!r} is not an integer in 1..{settings.max_rating}"
    if not isinstance(fb.get("kept_poem"), bool):
        return f"user_feedback.kept_poem {fb.get('kept_poem')!r} is not true/false"
    try:
        datetime.fromisoformat(str(record["timestamp"]))
    except ValueError:
        return f"timestamp {record['timestamp']!r} is not ISO 8601"
    return None


def read_feedback(path: Path, settings: FeedbackSettings | None = None) -> tuple[list[FeedbackEntry], list[Reject]]:
    """The file's sessions and, for every line that is not one, a reject naming ``<file>:<line>``. A missing
    file is no sessions (nobody has given feedback yet)."""
    settings = settings or FeedbackSettings()
    path = Path(path)
    if not path.exists():
        return [], []
    entries, rejects = [], []
    for number, record in iter_jsonl_lines(path.read_bytes().split(b"\n"), path, on_error="yield"):
        where = f"{path.name}:{number}"
        if isinstance(record, JsonlError):
            rejects.append(Reject(where, record.reason))
            continue
        problem = _problem(record, settings)
        if problem:
            rejects.append(Reject(where, problem))
        else:
            entries.append(FeedbackEntry(number, record))
    return entries, rejects


def summarize(entries: Sequence[FeedbackEntry]) -> dict[str, Any]:
    """Sessions, mean rating, kept rate, educator-helped rate, and per day (UTC) the sessions and mean rating."""
    n = len(entries)
    ratings = [e.feedback["rating"] for e in entries]
    helped = [e.feedback.get("educator_helpful") for e in entries if e.feedback.get("educator_helpful") is not None]
    days: dict[str, list[int]] = {}
    for e in entries:
        day = datetime.fromisoformat(str(e.record["timestamp"])).date().isoformat()
        days.setdefault(day, []).append(e.feedback["rating"])
    return {
        "sessions": n,
        "mean_rating": sum(ratings) / n if n else None,
        "kept_rate": sum(e.feedback["kept_poem"] for e in entries) / n if n else None,
        "educator_helpful_rate": sum(helped) / len(helped) if helped else None,
        "by_day": [{"day": d, "sessions": len(r), "mean_rating": sum(r) / len(r)} for d, r in sorted(days.items())],
        "running_mean_rating": [sum(ratings[:i + 1]) / (i + 1) for i in range(n)],
    }


def poet_pairs(entries: Sequence[FeedbackEntry], settings: FeedbackSettings, source: str = "feedback.jsonl"
               ) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Poet training pairs (``{"user_request", "brief", "poem", "origin": "feedback", "source", "rating"}``) from
    the sessions whose poem was kept and rated ``min_rating`` or more; a kept, well-rated session with an empty
    brief or poem is a reject."""
    pairs, rejects = [], []
    for e in entries:
        fb = e.feedback
        if not fb["kept_poem"] or fb["rating"] < settings.min_rating:
            continue
        brief, poem = str(e.record["generation_brief"]).strip(), str(e.record["final_poem"]).strip()
        where = f"{source}:{e.line}"
        if not brief or not poem:
            rejects.append(Reject(where, "kept session with an empty brief or poem"))
            continue
        pairs.append({"user_request": e.record["user_request"], "brief": brief, "poem": poem, "origin": "feedback",
                      "source": where, "rating": fb["rating"], "timestamp": e.record["timestamp"]})
    return pairs, rejects


# ---- asking the user ------------------------------------------------------------------------------------

def _yes_no(answer: str) -> bool | None:
    a = answer.strip().lower()
    if a in ("y", "yes", "1", "true"):
        return True
    if a in ("n", "no", "0", "false"):
        return False
    return None


def ask_feedback(settings: FeedbackSettings, ask: Callable[[str], str] = input,
                 say: Callable[[str], None] = print) -> UserFeedback | None:
    """Interactive: rating (blank skips the feedback), kept yes/no, educator helped yes/no/blank, notes, changes."""
    while True:
        raw = ask(f"Rate the session 1-{settings.max_rating} (blank: no feedback): ").strip()
        if not raw:
            return None
        if raw.isdigit() and 1 <= int(raw) <= settings.max_rating:
            rating = int(raw)
            break
        say(f"  a whole number from 1 to {settings.max_rating}, please")
    while (kept := _yes_no(ask("Did you keep the poem? [y/n]: "))) is None:
        say("  y or n, please")
    helped = _yes_no(ask("Did the educator help? [y/n, blank: no answer]: "))
    notes = ask("Notes (blank: none): ").strip()
    changes = ask("What would you change (blank: nothing): ").strip()
    return UserFeedback(rating, kept, helped, notes, changes)
