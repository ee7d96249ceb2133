"""Reading ``prompts.txt`` back: one ``"<file>.corpus <prompt>"`` line per document to generate.

A bad line is rejected with its file and line number and a reason; the other lines still count. Names taken
from the file become paths only through :func:`distillery_assets.paths.safe_child`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillery_assets.corpus.layout import CORPUS_SUFFIX
from distillery_assets.paths import UnsafePathError, safe_child
from distillery_assets.rejects import Reject


@dataclass(frozen=True)
class CorpusTask:
    """One document: where it goes, the prompt that produces it, and where that prompt was read."""

    path: Path
    file: str
    prompt: str
    source: str  # "<prompts.txt path> line <n>"


def _check_name(name: str) -> str | None:
    """Why ``name`` is not an acceptable ``.corpus`` file name, or None when it is."""
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator (absolute or nested paths are not allowed)"
    if not name.endswith(CORPUS_SUFFIX) or name == CORPUS_SUFFIX:
        return f"file name {name!r} does not end in '{CORPUS_SUFFIX}'"
    return None


def parse_line(raw: str, leaf_dir: Path, source: str) -> CorpusTask | Reject:
    """Parse one non-blank line of ``prompts.txt``."""
    parts = raw.split(" ", 1)
    if len(parts) != 2 or not parts[1].strip():
        return Reject(source, "expected '<file>.corpus <prompt>' (no space after the file name)")
    name, prompt = parts[0], parts[1].strip()
    problem = _check_name(name)
    if problem:
        return Reject(source, problem)
    try:
        path = safe_child(leaf_dir, name, source=source)
    except UnsafePathError as exc:
        return Reject(source, str(exc).removeprefix(f"{source}: "))
    return CorpusTask(path=path, file=name, prompt=prompt, source=source)


def parse_prompts_file(path: Path) -> tuple[list[CorpusTask], list[Reject]]:
    """All tasks of one ``prompts.txt`` (blank lines ignored) and every line rejected, with reasons.

    The file is decoded line by line: a line that is not UTF-8 is one reject naming its line, and the
    lines around it are parsed as usual.
    """
    tasks: list[CorpusTask] = []
    rejects: list[Reject] = []
    seen: dict[str, str] = {}
    for line_no, raw_bytes in enumerate(path.read_bytes().splitlines(), start=1):
        source = f"{path} line {line_no}"
        # Decoded one line at a time, so a stray byte costs its own line and nothing else.
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejects.append(Reject(source, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)"))
            continue
        if not raw.strip():
            continue
        parsed = parse_line(raw, path.parent, source)
        if isinstance(parsed, CorpusTask):
            if parsed.file in seen:
                parsed = Reject(source, f"file name {parsed.file!r} already listed at {seen[parsed.file]}")
            else:
                seen[parsed.file] = f"line {line_no}"
        (tasks if isinstance(parsed, CorpusTask) else rejects).append(parsed)
    return tasks, rejects
