"""The quality gate: per task, checks on that task's own text field (the seed looked only at
``critique``/``lesson``/``response`` and so rejected every brief and autopsy as empty).

:func:`check` returns the reasons a record fails (empty list = pass). Reasons are short tags plus detail,
e.g. ``"llm_ism: 'delve into'"``, so the reject log can be grouped and read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from distillery_assets.poetry.settings import GateSettings
from distillery_assets.poetry.verse import verse_verdict

# task name -> the field that holds the generated text the gate judges
TEXT_FIELD = {
    "critique": "critique",
    "brief": "brief",
    "comparison": "comparison",
    "autopsy": "autopsy",
    "dialogue": "follow_up",
    "lesson": "lesson",
    "poet_pair": "poem",
}
EDUCATOR_TASKS = ("critique", "brief", "comparison", "autopsy", "dialogue", "lesson")


@dataclass
class Gate:
    settings: GateSettings
    banned_phrases: list[str]

    def __post_init__(self) -> None:
        self._rubric = re.compile(self.settings.rubric_pattern, re.I | re.M)
        self._specific = re.compile(self.settings.specificity_pattern, re.I)

    def check(self, task: str, record: dict) -> list[str]:
        if task not in TEXT_FIELD:
            raise KeyError(f"unknown poetry task {task!r}; known: {', '.join(TEXT_FIELD)}")
        field = TEXT_FIELD[task]
        text = record.get(field)
        if not isinstance(text, str) or not text.strip():
            return [f"empty: field {field!r} missing or blank"]
        reasons = []
        low = text.lower()
        if len(text.strip()) < self.settings.min_chars:
            reasons.append(f"too_short: {len(text.strip())} chars < {self.settings.min_chars}")
        reasons += [f"llm_ism: {p!r}" for p in self.banned_phrases if p in low]
        if task in EDUCATOR_TASKS:
            reasons += [f"voice_break: {p!r}" for p in self.settings.voice_breaks if p.lower() in low]
            match = self._rubric.search(text)
            if match:
                reasons.append(f"anti_rubric: {match.group(0).strip()!r}")
        if task in self.settings.specificity_tasks and not self._specific.search(text):
            reasons.append("specificity: no line/stanza number or quoted phrase")
        return reasons

    def shape(self, task: str, record: dict) -> list[str]:
        """``not_verse: <why>`` when ``task`` is one of ``verse_tasks`` and its text is not verse by
        :func:`distillery_assets.poetry.verse.verse_verdict` (a poet trained on prose writes prose)."""
        text = record.get(TEXT_FIELD[task])
        if task not in self.settings.verse_tasks or not isinstance(text, str) or not text.strip():
            return []
        verdict = verse_verdict(text)
        return [] if verdict.verse else [f"not_verse: {verdict.reason}"]

    def split(self, task: str, records: Iterable[dict], *, verse: bool = False) -> tuple[list[dict], list[dict]]:
        """(passed, rejected); each rejected record carries ``_task`` and ``_reject_reasons``. With ``verse``
        the records of ``verse_tasks`` must also be verse (:meth:`shape`), as the datasets require."""
        passed, rejected = [], []
        for record in records:
            reasons = self.check(task, record) + (self.shape(task, record) if verse else [])
            if reasons:
                rejected.append({**record, "_task": task, "_reject_reasons": reasons})
            else:
                passed.append(record)
        return passed, rejected


def reason_counts(rejected: Iterable[dict]) -> dict[str, int]:
    """How often each reason tag (the part before ':') occurs."""
    return dict(Counter(r.split(":", 1)[0] for rec in rejected for r in rec["_reject_reasons"]))
