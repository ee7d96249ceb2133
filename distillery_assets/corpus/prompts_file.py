"""Reading ``prompts.txt`` back: one ``"<file>.corpus <prompt>"`` line per document to generate.

A bad line is one reject naming its file and line number with a reason; nothing about one line stops the
others. A line is rejected when:

* it is not UTF-8, or has no space after the file name, or the file name is followed by another blank (a tab,
  a no-break space): the reason says the *separator* is wrong;
* its file name does not end in ``.corpus``, holds a path separator, ``..`` or an absolute path (through
  :func:`distillery_assets.paths.safe_child`), or is one the filesystem would refuse or hide: too long for it
  (:func:`.layout.name_limits`, room kept for the atomic write's temporary name), starting with ``.`` (a hidden
  file), holding a control or invisible character, a character Windows refuses (``<>:"|?*``) or a reserved
  device name (``CON``, ``NUL``, ``COM1`` ...);
* its name was listed before in the same file.

A UTF-8 byte-order mark at the start of the file (what some Windows editors add) is removed with a warning
naming the file; a UTF-16 file is one reject telling to save it as UTF-8.
"""

from __future__ import annotations

import codecs
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.corpus.layout import CORPUS_SUFFIX, NOT_PORTABLE_CHARS, RESERVED_STEMS, name_limits
from distillery_assets.paths import UnsafePathError, safe_child
from distillery_assets.rejects import Reject

EXPECTED = "expected '<file>.corpus <prompt>'"


@dataclass(frozen=True)
class CorpusTask:
    """One document: where it goes, the prompt that produces it, and where that prompt was read."""

    path: Path
    file: str
    prompt: str
    source: str  # "<prompts.txt path> line <n>"


@dataclass
class PromptsFile:
    """One ``prompts.txt`` read: its documents, its rejected lines, and warnings about the file as a whole."""

    path: Path
    tasks: list[CorpusTask] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _char_name(char: str) -> str:
    names = {"\t": "a tab", "\u00a0": "a no-break space (U+00A0)", "\u3000": "an ideographic space (U+3000)"}
    return names.get(char) or f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"


def _check_name(name: str) -> str | None:
    """Why ``name`` is not an acceptable ``.corpus`` file name by its spelling alone, or None when it is."""
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator (absolute or nested paths are not allowed)"
    if not name.endswith(CORPUS_SUFFIX) or name == CORPUS_SUFFIX:
        return f"file name {name!r} does not end in '{CORPUS_SUFFIX}'"
    return None


def _check_length(name: str, leaf_dir: Path) -> str | None:
    """Why ``name`` is too long for the filesystem of ``leaf_dir`` (the name, or the whole path), or None."""
    max_name, max_path = name_limits(leaf_dir)
    size = len(os.fsencode(name))
    if size > max_name:
        return (f"file name {name[:40]!r}... is too long for the filesystem: {size} bytes, at most {max_name} "
                f"(its limit less room for the temporary name of the atomic write)")
    full = len(os.fsencode(str(leaf_dir / name)))
    if full > max_path:
        return f"path {str(leaf_dir / name)[:60]!r}... is too long for the filesystem: {full} bytes, at most {max_path}"
    return None


def _check_portable(name: str) -> str | None:
    """Why ``name`` would be hidden, invisible or refused by a filesystem the corpus may be copied to, or None."""
    if name.startswith("."):
        return f"file name {name!r} starts with '.': a hidden file that listings and most tools skip"
    odd = next((c for c in name if not c.isprintable() or c.isspace()), None)
    if odd is not None:
        return f"file name {name!r} contains an invisible or control character, {_char_name(odd)}"
    bad = sorted({c for c in name if c in NOT_PORTABLE_CHARS})
    if bad:
        return f"file name {name!r} contains {''.join(bad)!r}, refused by Windows filesystems and shares"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED_STEMS:
        return f"file name {name!r} is a reserved device name on Windows ({stem}), whatever its extension"
    return None


def parse_line(raw: str, leaf_dir: Path, source: str) -> CorpusTask | Reject:
    """Parse one non-blank line of ``prompts.txt``."""
    blank = next((i for i, c in enumerate(raw) if c.isspace()), None)
    if blank is not None and blank > 0 and raw[blank] != " ":
        return Reject(source, f"wrong separator: the file name is followed by {_char_name(raw[blank])}; "
                      f"{EXPECTED} with one space between them")
    parts = raw.split(" ", 1)
    if len(parts) != 2 or not parts[1].strip():
        return Reject(source, f"{EXPECTED} (no space after the file name)")
    name, prompt = parts[0], parts[1].strip()
    problem = _check_name(name) or _check_length(name, leaf_dir)  # the length first: safe_child resolves the path
    if problem:
        return Reject(source, problem)
    try:
        path = safe_child(leaf_dir, name, source=source)
    except UnsafePathError as exc:
        return Reject(source, str(exc).removeprefix(f"{source}: "))
    problem = _check_portable(name)
    if problem:
        return Reject(source, problem)
    return CorpusTask(path=path, file=name, prompt=prompt, source=source)


def parse_prompts_file(path: Path) -> PromptsFile:
    """All tasks of one ``prompts.txt`` (blank lines ignored), every line rejected with its reason, and the
    warnings about the file (a byte-order mark removed).

    The file is decoded line by line: a line that is not UTF-8 is one reject naming its line, and the
    lines around it are parsed as usual. A file that cannot be read is one reject naming the file.
    """
    out = PromptsFile(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        out.rejects.append(Reject(str(path), f"cannot read the file ({exc.strerror or exc})"))
        return out
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        out.warnings.append(f"{path}: removed the UTF-8 byte-order mark at the start of the file "
                            "(an editor added it; the file names are read without it)")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        out.rejects.append(Reject(f"{path} line 1", "the file is UTF-16 text (it starts with a UTF-16 byte-order "
                                  "mark); save it as UTF-8"))
        return out
    seen: dict[str, str] = {}
    for line_no, raw_bytes in enumerate(data.splitlines(), start=1):
        source = f"{path} line {line_no}"
        # Decoded one line at a time, so a stray byte costs its own line and nothing else.
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.rejects.append(Reject(source, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)"))
            continue
        if not raw.strip():
            continue
        parsed = parse_line(raw, path.parent, source)
        if isinstance(parsed, CorpusTask):
            if parsed.file in seen:
                parsed = Reject(source, f"file name {parsed.file!r} already listed at {seen[parsed.file]}")
            else:
                seen[parsed.file] = f"line {line_no}"
        (out.tasks if isinstance(parsed, CorpusTask) else out.rejects).append(parsed)
    return out
