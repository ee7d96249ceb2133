"""The theme pipeline's editable data files under ``data/config/theme/`` and their loaders.

* ``theme_keywords.json`` 16 theme keyword sets (see :mod:`.keywords`)
* ``personas.yaml``       persona system prompts, grouped
* ``query_themes.txt``    topics for the generated questions, one per line
* ``anachronisms.txt``    terms the 1969 persona must not use, one per line
* ``books.json``          which ebooks to take, by category (see :mod:`.books`)

Every loader raises :class:`ThemeConfigError` naming the file (and line or field) on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillery_assets.io.hashing import sha256_files
from distillery_assets.io.yamlfile import ConfigFileError, read_yaml

KEYWORDS_FILE = "theme_keywords.json"
PERSONAS_FILE = "personas.yaml"
QUERY_THEMES_FILE = "query_themes.txt"
ANACHRONISMS_FILE = "anachronisms.txt"
BOOKS_FILE = "books.json"
# the files the ChatML generator is built from (personas, question topics, validator word lists)
GENERATOR_FILES = (PERSONAS_FILE, QUERY_THEMES_FILE, ANACHRONISMS_FILE, KEYWORDS_FILE)


class ThemeConfigError(ConfigFileError):
    """A theme config file is missing or invalid; the message names the file and the line or field."""


@dataclass(frozen=True)
class Persona:
    name: str
    group: str
    prompt: str


def load_personas(path: Path) -> list[Persona]:
    raw = read_yaml(path, error=ThemeConfigError, what="personas file")
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise ThemeConfigError(f"{path}: field 'groups' must map group names to {{variant: prompt}}")
    personas: list[Persona] = []
    seen: set[str] = set()
    for group, variants in groups.items():
        if not isinstance(variants, dict) or not variants:
            raise ThemeConfigError(f"{path}: groups.{group} must map variant names to prompts")
        for name, prompt in variants.items():
            if not isinstance(prompt, str) or len(prompt.strip()) < 20:
                raise ThemeConfigError(f"{path}: groups.{group}.{name} needs a prompt of at least 20 characters")
            if name in seen:
                raise ThemeConfigError(f"{path}: groups.{group}.{name}: variant name used twice")
            seen.add(name)
            personas.append(Persona(name=str(name), group=str(group), prompt=" ".join(prompt.split())))
    return personas


def load_lines(path: Path, what: str) -> list[str]:
    """Non-empty, non-comment lines; duplicates are an error naming both lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeConfigError(f"{path}: cannot read {what}: {exc}") from exc
    out: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = line.lower()
        if key in first_line:
            raise ThemeConfigError(f"{path} line {number}: {what} {line!r} repeats line {first_line[key]}")
        first_line[key] = number
        out.append(line)
    if not out:
        raise ThemeConfigError(f"{path}: no {what} found")
    return out


def file_digest(*paths: Path) -> str:
    """Short hash of the files' bytes: changes when an editable config changes."""
    return sha256_files(*paths)[:12]


def generator_files(folder: Path) -> list[Path]:
    """The config files :func:`distillery_assets.theme.setup.build_generator` reads from ``folder``, in the
    order it reads them (their bytes also fingerprint the generator's checkpoint journal)."""
    return [Path(folder) / name for name in GENERATOR_FILES]
