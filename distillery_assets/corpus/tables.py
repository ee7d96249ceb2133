"""The corpus prompt tables: story groups, article angles and encyclopedia categories, loaded and validated.

The tables are data the users own (their existing corpora were generated from them), kept in
``<config_dir>/corpus/prompt_tables.yaml``. Adding a group, category or subcategory there is all it takes to
get new prompts and new partitions.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distillery_assets.corpus.layout import NAME_MAX_DEFAULT, RESERVED_STEMS, TEMP_NAME_ROOM
from distillery_assets.io.yamlfile import ConfigFileError, read_yaml, validate_yaml
from distillery_assets.paths import config_dir

TABLES_RELPATH = Path("corpus") / "prompt_tables.yaml"

# Slugs become directory and file names: keep them to a conservative, portable alphabet.
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CORPUS_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.corpus$")
_WORD_TARGET = re.compile(r"^(\d+)-(\d+)$")
# the longest .corpus name a prompts.txt line may give (on a filesystem whose names can be 255 bytes)
MAX_FILE_NAME = NAME_MAX_DEFAULT - TEMP_NAME_ROOM


def _repeated(items: list[str]) -> list[str]:
    return sorted({item for item in items if items.count(item) > 1})


class PromptTablesError(ConfigFileError):
    """The prompt tables file is missing or malformed; the message names the file and the field."""


def _check_slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"{what} {value!r} must match {_SLUG.pattern} (lower-case letters, digits, '-', '_')")
    return value


def _check_word_target(value: str) -> str:
    match = _WORD_TARGET.match(value)
    if not match or int(match.group(1)) > int(match.group(2)):
        raise ValueError(f"word target {value!r} must look like '200-400' (low-high)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value):
        # every text ends up on one line of prompts.txt: a line break would split a prompt in two
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            raise ValueError("must be a single line (no line breaks)")
        return value


class StoryPrompt(_Strict):
    file: str
    theme: str = Field(min_length=1)

    @field_validator("file")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not _CORPUS_FILE.match(value):
            raise ValueError(f"file {value!r} must be a plain name ending in '.corpus' (no directories)")
        if len(value) > MAX_FILE_NAME:
            raise ValueError(f"file {value[:40]!r}... is {len(value)} characters long, at most {MAX_FILE_NAME}")
        if value.split(".", 1)[0].upper() in RESERVED_STEMS:
            raise ValueError(f"file {value!r} is a reserved device name on Windows")
        return value


class StoryGroup(_Strict):
    word_target: str
    style: str = Field(min_length=1)
    prompts: list[StoryPrompt] = Field(min_length=1)

    @field_validator("word_target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _check_word_target(value)


class ArticleAngle(_Strict):
    slug: str
    template: str

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value, "angle slug")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{topic_readable}" not in value:
            raise ValueError("template must contain the placeholder {topic_readable}")
        try:
            value.format(topic_readable="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template has a placeholder other than {{topic_readable}}: {exc}") from exc
        return value


class PromptTables(_Strict):
    encyclopedia_word_target: str = "800-1200"
    story_groups: dict[str, StoryGroup] = Field(min_length=1)
    article_angles: list[ArticleAngle] = Field(min_length=1)
    encyclopedia: dict[str, list[str]] = Field(min_length=1)

    @field_validator("encyclopedia_word_target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _check_word_target(value)

    @field_validator("story_groups")
    @classmethod
    def _groups(cls, value: dict[str, StoryGroup]) -> dict[str, StoryGroup]:
        for name, group in value.items():
            _check_slug(name, "story group")
            dupes = _repeated([p.file for p in group.prompts])
            if dupes:
                raise ValueError(f"story group {name!r} repeats file names {dupes}")
        return value

    @field_validator("article_angles")
    @classmethod
    def _angles(cls, value: list[ArticleAngle]) -> list[ArticleAngle]:
        dupes = _repeated([a.slug for a in value])
        if dupes:
            raise ValueError(f"article angles repeat slugs {dupes}")
        return value

    @field_validator("encyclopedia")
    @classmethod
    def _categories(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category, subcategories in value.items():
            _check_slug(category, "category")
            if not subcategories:
                raise ValueError(f"category {category!r} has no subcategories")
            for sub in subcategories:
                _check_slug(sub, f"subcategory of {category!r}")
            dupes = _repeated(subcategories)
            if dupes:
                raise ValueError(f"category {category!r} repeats subcategories {dupes}")
        return value

    @model_validator(mode="after")
    def _article_names_fit(self) -> "PromptTables":
        # an article's file is "<subcategory, '-' -> '_'>_<angle slug>.corpus" (prompts.encyclopedia_file_name)
        longest_angle = max(len(a.slug) for a in self.article_angles)
        for category, subcategories in self.encyclopedia.items():
            for sub in subcategories:
                size = len(sub) + 1 + longest_angle + len(".corpus")
                if size > MAX_FILE_NAME:
                    raise ValueError(f"subcategory {sub!r} of {category!r} makes file names of {size} characters "
                                     f"with the longest article angle, at most {MAX_FILE_NAME}")
        return self


def default_tables_path() -> Path:
    return config_dir() / TABLES_RELPATH


def load_tables(path: Path | None = None) -> PromptTables:
    """Read and validate the prompt tables; errors name the file and the offending field."""
    path = Path(path) if path is not None else default_tables_path()
    raw = read_yaml(path, error=PromptTablesError, what="prompt tables file")
    if not isinstance(raw, dict):
        raise PromptTablesError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate_yaml(raw, PromptTables, path=path, error=PromptTablesError)


@cache
def _cached_default(path: Path, mtime_ns: int) -> PromptTables:
    return load_tables(path)


def default_tables() -> PromptTables:
    """The project's tables, re-read whenever the file changes (cheap to call repeatedly)."""
    path = default_tables_path()
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError as exc:
        raise PromptTablesError(f"{path}: prompt tables file not found") from exc
    return _cached_default(path, mtime)
