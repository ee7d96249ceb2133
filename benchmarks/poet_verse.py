"""How often does the poet write verse? 20 requests through the tutor's first two steps, counted by one rule.

For each request the educator writes the brief and the poet writes the draft, with the prompts, systems and
sampling of the tutor session (``data/config/poetry/prompts.yaml``, ``poet_system.txt``, ``inference.yaml``,
profile ``small`` unless ``$DISTILLERY_POETRY_PROFILE`` says otherwise). The models are the exported
``*educator*.gguf`` / ``*poet*.gguf`` under ``data_dir()`` when present, else the bundled base SmolLM2-135M
(``--base`` forces the base for both). Each draft is judged by
:func:`distillery_assets.poetry.verse.verse_verdict` (several short lines, mostly distinct, no prose about
"the poem"); the script prints each verdict and the count. When the draft's ``min_lines`` holds end-of-turn back, the same
requests run again without the hold, in the same run, as the baseline.

    python benchmarks/poet_verse.py                 # 20 requests from data/inputs/poetry/requests.txt
    python benchmarks/poet_verse.py --base --n 20 --show
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillery_assets.embedded import smollm2_gguf_path  # noqa: E402
from distillery_assets.paths import inputs_dir  # noqa: E402
from distillery_assets.poetry.session import draft_for_request, session_prompts  # noqa: E402
from distillery_assets.poetry.settings import PoetryConfig  # noqa: E402
from distillery_assets.poetry.verse import verse_verdict  # noqa: E402


def requests_from(path: Path, n: int) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    found = [line for line in lines if line and not line.startswith("#")]
    if not found:
        raise SystemExit(f"{path}: no requests")
    return [found[i % len(found)] for i in range(n)]


def pick_model(role: str, use_base: bool) -> Path:
    from distillery_assets.poetry.tutor import latest_gguf

    if not use_base:
        try:
            return latest_gguf(role)
        except FileNotFoundError:
            pass
    return smollm2_gguf_path()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="requests (default 20)")
    parser.add_argument("--requests", type=Path, default=inputs_dir() / "poetry" / "requests.txt")
    parser.add_argument("--base", action="store_true", help="the bundled base SmolLM2 for both roles")
    parser.add_argument("--show", action="store_true", help="print every draft")
    parser.add_argument("--json", type=Path, help="write the drafts and verdicts here")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the same requests with the draft's min_lines off (run by default as the baseline)")
    args = parser.parse_args(argv)

    from distillery_assets.poetry.gguf_chat import GGUFChat

    cfg = PoetryConfig()
    inf = cfg.inference
    educator_path, poet_path = pick_model("educator", args.base), pick_model("poet", args.base)
    print(f"educator: {educator_path}\npoet:     {poet_path}\nprofile:  {inf.profile}")
    educator = GGUFChat(educator_path, inf.models.get("educator"), contexts=1)  # brief and draft only
    poet = educator if poet_path == educator_path else GGUFChat(poet_path, inf.models.get("poet"))
    held = inf.sampling.draft.min_lines
    variants = [("as configured", inf.sampling)]
    if held and not args.no_compare:  # the same requests without the hold, in the same run: the baseline
        variants.append(("min_lines 0", inf.sampling.model_copy(
            update={"draft": inf.sampling.draft.model_copy(update={"min_lines": 0})})))
    results, start = {}, time.perf_counter()
    try:
        for label, sampling in variants:
            print(f"\n-- drafts {label} (draft min_lines {sampling.draft.min_lines})")
            results[label] = rows = []
            for i, request in enumerate(requests_from(args.requests, args.n), 1):
                brief, draft = draft_for_request(request, educator=educator, poet=poet,
                                                 prompts=session_prompts(cfg), sampling=sampling)
                verdict = verse_verdict(draft)
                rows.append({"request": request, "brief": brief, "draft": draft, "verse": verdict.verse,
                             "reason": verdict.reason})
                print(f"{i:2d}. {'VERSE' if verdict.verse else 'prose'}  {verdict.reason:<48} {request}")
                if args.show:
                    print("    " + draft.replace("\n", "\n    ") + "\n")
    finally:
        educator.close()
        if poet is not educator:
            poet.close()
    print()
    for label, rows in results.items():
        print(f"verse drafts, {label}: {sum(r['verse'] for r in rows)} of {len(rows)}")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"educator": str(educator_path), "poet": str(poet_path),
                                         "variants": {label: {"verse": sum(r["verse"] for r in rows),
                                                              "n": len(rows), "rows": rows}
                                                      for label, rows in results.items()}}, indent=2),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
