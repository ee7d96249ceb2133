"""CLI: run the educator/poet loop on two GGUF files.

    python -m distillery_assets.poetry.tutor "Write a poem about winter light" \
        [--educator X.gguf] [--poet Y.gguf] [--max-revisions 3] [--json OUT.jsonl] [--markdown]

Without ``--educator``/``--poet`` it takes the newest exported ``*educator*.gguf`` / ``*poet*.gguf`` under
``data_dir()`` (what ``educator_gguf`` / ``poet_gguf`` wrote). Settings come from
``data/config/poetry/inference.yaml`` (profile ``small`` unless ``$DISTILLERY_POETRY_PROFILE`` says otherwise).
It prints the session as text for a terminal (poems indented with their line breaks); ``--markdown`` prints
the markdown the Dagster asset shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distillery_assets.paths import data_dir
from distillery_assets.poetry.io_helpers import append_jsonl
from distillery_assets.poetry.session import run_session, session_markdown, session_prompts, session_text
from distillery_assets.poetry.settings import PoetryConfig


def latest_gguf(role: str, root: Path | None = None) -> Path:
    """Newest ``*<role>*.gguf`` under ``root`` (default ``data_dir()``), ignoring temporaries."""
    root = root or data_dir()
    found = [p for p in root.rglob(f"*{role}*.gguf") if p.is_file() and not p.name.startswith(".tmp-")]
    if not found:
        raise FileNotFoundError(f"no *{role}*.gguf under {root}; materialize {role}_gguf or pass --{role} PATH")
    return max(found, key=lambda p: p.stat().st_mtime)


def run_sessions(requests: list[str], educator_path: Path, poet_path: Path, *, cfg: PoetryConfig | None = None,
                 max_revisions: int | None = None) -> list[dict]:
    """Load both models once and run one session per request."""
    from distillery_assets.poetry.gguf_chat import GGUFChat

    cfg = cfg or PoetryConfig()
    inf = cfg.inference
    educator = GGUFChat(educator_path, inf.models.get("educator"))
    poet = GGUFChat(poet_path, inf.models.get("poet"))
    try:
        sessions = []
        for request in requests:
            session = run_session(request, educator=educator, poet=poet, prompts=session_prompts(cfg),
                                  sampling=inf.sampling,
                                  max_revisions=inf.max_revisions if max_revisions is None else max_revisions,
                                  approval_phrases=inf.approval_phrases)
            session["metadata"].update(model_educator=educator_path.name, model_poet=poet_path.name)
            sessions.append(session)
        return sessions
    finally:
        educator.close()
        poet.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillery_assets.poetry.tutor",
                                     description="Educator briefs, poet drafts, educator critiques; repeat.")
    parser.add_argument("request", help='e.g. "Write a poem about winter light"')
    parser.add_argument("--educator", type=Path, help="educator GGUF (default: newest under data_dir())")
    parser.add_argument("--poet", type=Path, help="poet GGUF (default: newest under data_dir())")
    parser.add_argument("--max-revisions", type=int, default=None, help="critique rounds (default: inference.yaml)")
    parser.add_argument("--json", type=Path, help="append the session as one JSON line to this file")
    parser.add_argument("--markdown", action="store_true", help="print markdown instead of terminal text")
    args = parser.parse_args(argv)
    try:
        educator = args.educator or latest_gguf("educator")
        poet = args.poet or latest_gguf("poet")
        session = run_sessions([args.request], educator, poet, max_revisions=args.max_revisions)[0]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(session_markdown(session) if args.markdown else session_text(session))
    if args.json:
        append_jsonl(args.json, session)
        print(f"session appended to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
