"""CLI: run the educator/poet loop on two GGUF files, then take the user's feedback.

    python -m distillery_assets.poetry.tutor "Write a poem about winter light" \
        [--educator X.gguf] [--poet Y.gguf] [--max-revisions 3] [--swap] [--json OUT.jsonl] [--markdown] \
        [--rating 1-5 --kept|--not-kept [--educator-helped|--educator-not-helpful] [--notes TEXT] [--changes TEXT]] \
        [--no-feedback] [--feedback-file PATH]

Without ``--educator``/``--poet`` it takes the newest exported ``*educator*.gguf`` / ``*poet*.gguf`` under
``data_dir()`` (what ``educator_gguf`` / ``poet_gguf`` wrote). Settings come from
``data/config/poetry/inference.yaml`` (profile ``small`` unless ``$DISTILLERY_POETRY_PROFILE`` says otherwise).
It prints the session as text for a terminal (poems indented with their line breaks); ``--markdown`` prints
the markdown the Dagster asset shows.

``--swap`` holds one model in memory at a time (seed 001's ``swapping_pipeline``, for a poet too large to share
memory with the educator): each turn of the other model unloads the one held and loads its own. Every load is
timed and shown after the session, swapping or not.

Feedback (seed 001's ``feedback.py``): after the session the CLI asks for a rating, whether the poem was kept,
whether the educator helped, and notes, when the terminal is interactive; scripts pass ``--rating`` and
``--kept``/``--not-kept`` (with the others optional) instead. The session and the feedback are appended as one
line to the feedback file (default ``data/inputs/poetry/feedback/feedback.jsonl``), which the
``tutor_feedback`` asset reads. ``--no-feedback`` skips it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery_assets.paths import data_dir
from distillery_assets.poetry.io_helpers import append_jsonl
from distillery_assets.poetry.session import run_session, session_markdown, session_prompts, session_text
from distillery_assets.poetry.settings import PoetryConfig

ROLES = ("educator", "poet")


def latest_gguf(role: str, root: Path | None = None) -> Path:
    """Newest ``*<role>*.gguf`` under ``root`` (default ``data_dir()``), ignoring temporaries."""
    root = root or data_dir()
    found = [p for p in root.rglob(f"*{role}*.gguf") if p.is_file() and not p.name.startswith(".tmp-")]
    if not found:
        raise FileNotFoundError(f"no *{role}*.gguf under {root}; materialize {role}_gguf or pass --{role} PATH")
    return max(found, key=lambda p: p.stat().st_mtime)


Loader = Callable[[str, Path], Any]
"""``(role, path) -> chat callable with close()``: how a model is loaded (tests pass scripted ones)."""


def gguf_loader(cfg: PoetryConfig) -> Loader:
    """GGUF files through ``GGUFChat`` with the role's model settings and its system prompt evaluated at load."""
    from distillery_assets.poetry.gguf_chat import GGUFChat

    systems = {"educator": cfg.persona_condensed, "poet": cfg.poet_system}
    return lambda role, path: GGUFChat(path, cfg.inference.models.get(role), system=systems[role])


class Models:
    """The two chat callables of a session and the time every load took.

    ``swap=False`` loads both once, up front. ``swap=True`` keeps one model in memory: asking the other one
    closes the model held and loads the one asked for (the seed's swapping pipeline)."""

    def __init__(self, paths: dict[str, Path], loader: Loader, *, swap: bool = False):
        self.paths, self.loader, self.swap = {r: Path(p) for r, p in paths.items()}, loader, swap
        self.loads: list[dict[str, Any]] = []
        self.held: dict[str, Any] = {}
        if not swap:
            for role in ROLES:
                self._load(role)

    def _load(self, role: str) -> Any:
        start = time.perf_counter()
        model = self.loader(role, self.paths[role])
        self.loads.append({"model": role, "file": self.paths[role].name,
                           "seconds": round(time.perf_counter() - start, 3)})
        self.held[role] = model
        return model

    def _get(self, role: str) -> Any:
        if role in self.held:
            return self.held[role]
        for other in list(self.held):  # swapping: one model at a time
            self.held.pop(other).close()
        return self._load(role)

    def chat(self, role: str):
        """The role's chat callable: the loaded model itself when both are held (so a session can read one
        model's next turn ahead while the other writes), a loader in front of it when swapping."""
        if not self.swap:
            return self.held[role]
        return lambda messages, sampling: self._get(role)(messages, sampling)

    def close(self) -> None:
        while self.held:
            self.held.popitem()[1].close()


def run_sessions(requests: list[str], educator_path: Path, poet_path: Path, *, cfg: PoetryConfig | None = None,
                 max_revisions: int | None = None, swap: bool = False, loader: Loader | None = None) -> list[dict]:
    """One session per request. Without ``swap`` both models are loaded once for all of them; with it, one
    model at a time. Each session's metadata names the files and lists the model loads it waited for."""
    cfg = cfg or PoetryConfig()
    inf = cfg.inference
    models = Models({"educator": educator_path, "poet": poet_path}, loader or gguf_loader(cfg), swap=swap)
    try:
        sessions = []
        for request in requests:
            before = len(models.loads) if sessions else 0  # the first session waited for the first loads
            session = run_session(request, educator=models.chat("educator"), poet=models.chat("poet"),
                                  prompts=session_prompts(cfg), sampling=inf.sampling,
                                  max_revisions=inf.max_revisions if max_revisions is None else max_revisions,
                                  approval_phrases=inf.approval_phrases)
            loads = models.loads[before:]
            session["metadata"].update(model_educator=Path(educator_path).name, model_poet=Path(poet_path).name,
                                       swap=swap, model_loads=loads,
                                       model_load_seconds=round(sum(x["seconds"] for x in loads), 3))
            sessions.append(session)
        return sessions
    finally:
        models.close()


def _feedback_from_flags(args, settings):
    from distillery_assets.poetry.feedback import UserFeedback

    if args.rating is None:
        if args.kept is not None or args.educator_helped is not None or args.notes or args.changes:
            raise ValueError("feedback flags given without --rating (give --rating 1-5 and --kept/--not-kept)")
        return None
    if args.kept is None:
        raise ValueError("--rating needs --kept or --not-kept")
    return UserFeedback(args.rating, args.kept, args.educator_helped, args.notes or "", args.changes or "").check(settings)


def main(argv: list[str] | None = None, *, loader: Loader | None = None, ask: Callable[[str], str] | None = None,
         interactive: bool | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillery_assets.poetry.tutor",
                                     description="Educator briefs, poet drafts, educator critiques; repeat. Then "
                                                 "your feedback.")
    parser.add_argument("request", help='e.g. "Write a poem about winter light"')
    parser.add_argument("--educator", type=Path, help="educator GGUF (default: newest under data_dir())")
    parser.add_argument("--poet", type=Path, help="poet GGUF (default: newest under data_dir())")
    parser.add_argument("--max-revisions", type=int, default=None, help="critique rounds (default: inference.yaml)")
    parser.add_argument("--swap", action="store_true",
                        help="hold one model in memory at a time (load times are shown)")
    parser.add_argument("--json", type=Path, help="append the session as one JSON line to this file")
    parser.add_argument("--markdown", action="store_true", help="print markdown instead of terminal text")
    fb = parser.add_argument_group("feedback (asked interactively on a terminal; flags for scripts)")
    fb.add_argument("--rating", type=int, help="1 (poor) to 5 (excellent)")
    kept = fb.add_mutually_exclusive_group()
    kept.add_argument("--kept", dest="kept", action="store_true", default=None, help="you kept the poem")
    kept.add_argument("--not-kept", dest="kept", action="store_false", help="you did not keep the poem")
    helped = fb.add_mutually_exclusive_group()
    helped.add_argument("--educator-helped", dest="educator_helped", action="store_true", default=None)
    helped.add_argument("--educator-not-helpful", dest="educator_helped", action="store_false")
    fb.add_argument("--notes", help="free text")
    fb.add_argument("--changes", help="what you would change")
    fb.add_argument("--no-feedback", action="store_true", help="record no feedback for this session")
    fb.add_argument("--feedback-file", type=Path, help="default: data/inputs/poetry/feedback/feedback.jsonl")
    args = parser.parse_args(argv)

    from distillery_assets.poetry import feedback as fbk

    try:
        settings = fbk.load_feedback_settings()
        given = None if args.no_feedback else _feedback_from_flags(args, settings)
        educator = args.educator or latest_gguf("educator")
        poet = args.poet or latest_gguf("poet")
        session = run_sessions([args.request], educator, poet, max_revisions=args.max_revisions, swap=args.swap,
                               loader=loader)[0]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(session_markdown(session) if args.markdown else session_text(session))
    if args.json:
        append_jsonl(args.json, session)
        print(f"session appended to {args.json}", file=sys.stderr)
    if args.no_feedback:
        return 0
    if given is None:
        tty = sys.stdin.isatty() if interactive is None else interactive
        if not tty:
            print("no feedback recorded (not a terminal; pass --rating and --kept/--not-kept)", file=sys.stderr)
            return 0
        given = fbk.ask_feedback(settings, ask=ask or input)
        if given is None:
            print("no feedback recorded", file=sys.stderr)
            return 0
    path = args.feedback_file or fbk.feedback_path()
    line = fbk.append_feedback(path, fbk.feedback_record(session, given))
    print(f"feedback recorded: {path}:{line} (rating {given.rating}, kept {given.kept_poem})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
