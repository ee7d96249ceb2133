"""Poetry's leaf text helpers: filling a prompt template, and telling a reply that only repeats its source.

Both the teaching-data tasks (:mod:`distillery_assets.poetry.tasks`) and the tutor loop
(:mod:`distillery_assets.poetry.session`) use them; they import nothing of the pipeline.
"""

from __future__ import annotations

import difflib
import re

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

ECHO_RATIO = 0.8
"""A reply this similar (difflib ratio) to the text it was asked about repeats it instead of answering."""


class PromptError(KeyError):
    """A prompt template uses a placeholder the task does not provide."""


def render(template: str, *, name: str = "prompt", **fields: str) -> str:
    """Fill ``{name}`` placeholders; values are inserted literally (braces in poems are safe)."""

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in fields:
            raise PromptError(f"prompts.yaml {name}: unknown placeholder {{{key}}} (have: {', '.join(fields)})")
        return str(fields[key])

    return _PLACEHOLDER.sub(sub, template)


def echoes(reply: str, source: str) -> bool:
    """``reply`` mostly repeats ``source`` (a small model copying the draft back as its critique)."""
    a, b = " ".join(reply.split()).lower(), " ".join(source.split()).lower()
    return bool(a and b) and difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= ECHO_RATIO
