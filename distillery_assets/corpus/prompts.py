"""The prompt tables rendered into leaf directories and ``prompts.txt`` text.

These rules reproduce, byte for byte, the prompts and file names of the corpora users already hold:

* story: ``"Write a short story about {theme}. {style} Aim for {word_target} words."``
* encyclopedia: the angle template with ``topic_readable`` filled in, then ``" Aim for 800-1200 words."``;
  ``topic_readable = "<subcategory, '-' -> ' '> (in the context of <category, '-' -> ' '>)"`` and the file
  name is ``"<subcategory, '-' -> '_'>_<angle slug>.corpus"``; the leaf directory keeps the hyphens.
* ``prompts.txt``: one ``"<file> <prompt>"`` line per prompt, ``\\n``-separated, with a trailing newline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from distillery_assets.corpus.layout import PROMPTS_FILE, CorpusKind
from distillery_assets.corpus.tables import PromptTables
from distillery_assets.io import atomic_write_text
from distillery_assets.paths import safe_child


@dataclass(frozen=True)
class PromptLine:
    file: str
    prompt: str


@dataclass(frozen=True)
class Leaf:
    """One leaf directory of the corpus (relative to the root) and the prompts its ``prompts.txt`` holds."""

    relpath: PurePosixPath
    lines: tuple[PromptLine, ...]

    def render(self) -> str:
        return render_prompts_txt(self.lines)


def story_prompt(theme: str, style: str, word_target: str) -> str:
    return f"Write a short story about {theme}. {style} Aim for {word_target} words."


def topic_readable(subcategory: str, category: str) -> str:
    return f"{subcategory.replace('-', ' ')} (in the context of {category.replace('-', ' ')})"


def encyclopedia_file_name(subcategory: str, angle_slug: str) -> str:
    return f"{subcategory.replace('-', '_')}_{angle_slug}.corpus"


def encyclopedia_prompt(template: str, topic: str, word_target: str) -> str:
    return template.format(topic_readable=topic) + f" Aim for {word_target} words."


def story_leaves(tables: PromptTables, group: str) -> list[Leaf]:
    spec = tables.story_groups[group]
    lines = tuple(PromptLine(p.file, story_prompt(p.theme, spec.style, spec.word_target)) for p in spec.prompts)
    return [Leaf(PurePosixPath(CorpusKind.STORIES.value, group), lines)]


def encyclopedia_leaves(tables: PromptTables, category: str) -> list[Leaf]:
    leaves = []
    for sub in tables.encyclopedia[category]:
        topic = topic_readable(sub, category)
        lines = tuple(
            PromptLine(
                encyclopedia_file_name(sub, angle.slug),
                encyclopedia_prompt(angle.template, topic, tables.encyclopedia_word_target),
            )
            for angle in tables.article_angles
        )
        leaves.append(Leaf(PurePosixPath(CorpusKind.ENCYCLOPEDIA.value, category, sub), lines))
    return leaves


def leaves_for(tables: PromptTables, kind: CorpusKind, key: str) -> list[Leaf]:
    """The leaves of one partition (a story group or an encyclopedia category)."""
    table = tables.story_groups if kind is CorpusKind.STORIES else tables.encyclopedia
    if key not in table:
        raise KeyError(f"{kind.value} partition {key!r} is not in the prompt tables (known: {sorted(table)})")
    return story_leaves(tables, key) if kind is CorpusKind.STORIES else encyclopedia_leaves(tables, key)


def word_target_for(tables: PromptTables, kind: CorpusKind, key: str) -> str:
    if kind is CorpusKind.STORIES:
        return tables.story_groups[key].word_target
    return tables.encyclopedia_word_target


def all_leaves(tables: PromptTables) -> list[Leaf]:
    return [leaf for group in tables.story_groups for leaf in story_leaves(tables, group)] + [
        leaf for category in tables.encyclopedia for leaf in encyclopedia_leaves(tables, category)
    ]


def render_prompts_txt(lines: tuple[PromptLine, ...] | list[PromptLine]) -> str:
    return "\n".join(f"{line.file} {line.prompt}" for line in lines) + "\n"


@dataclass(frozen=True)
class WrittenLeaf:
    path: Path
    lines: int
    changed: bool


def write_leaf(root: Path, leaf: Leaf) -> WrittenLeaf:
    """(Re)write the leaf's ``prompts.txt`` atomically; ``.corpus`` files beside it are never touched."""
    directory = safe_child(root, str(leaf.relpath), source=f"leaf {leaf.relpath}")
    target = directory / PROMPTS_FILE
    text = leaf.render()
    try:
        changed = target.read_text(encoding="utf-8") != text
    except (FileNotFoundError, UnicodeDecodeError):
        changed = True
    atomic_write_text(target, text)
    return WrittenLeaf(path=target, lines=len(leaf.lines), changed=changed)
