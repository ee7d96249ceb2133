"""The teaching-data tasks as LLM tasks: which rows each task asks about, and how an answer becomes a record.

Every task is one :class:`TeachingTask` (``distillery_assets.llm.task.LLMTask``): a prompt template from
``prompts.yaml`` filled with the row's fields, an optional system prompt, and the record field the answer
goes into. The builders below (``critiques``, ``briefs``, ...) return the task and its rows; the runner
(:func:`distillery_assets.llm.task.run_task`) does the asking. Record schemas (one JSON object per line, as
in the seed, but never with an empty field):

=============  ===========================================================
critique (T1)  ``{"poem": Poem, "critique"}``
brief (T2)     ``{"user_request", "brief"}``
comparison     ``{"poem_a": Poem, "poem_b": Poem, "comparison"}``
autopsy (T4)   ``{"poem": Poem, "autopsy"}``
dialogue (T5)  ``{"poem": Poem, "critique", "revision", "follow_up"}``
lesson (T6)    ``{"question", "lesson"}``
poet_pair      ``{"user_request", "brief", "poem"}`` (the LLM's poem), or
               ``{"brief", "poem", "source", "origin": "verse"}`` (a shipped poem)
=============  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult
from distillery_assets.llm.task import LLMTask, Reject
from distillery_assets.poetry.raw_poems import Poem
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.text import echoes, render


@dataclass(frozen=True)
class Item:
    """One row of a teaching task: what it is about (names it in rejects), the template's fields, and
    the values carried into the record."""

    key: str
    fields: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict, compare=False)


class TeachingTask(LLMTask[Item]):
    """Template + system prompt in, one text field of the record out."""

    def __init__(self, cfg: PoetryConfig, tag: str, template: str, field_name: str, *, system: str | None,
                 poem: bool = False):
        vol = cfg.pipeline.volumes
        self.name = tag
        self.template_name, self.template = template, getattr(cfg.prompts, template)
        self.field_name, self.system, self.poem = field_name, system, poem
        self.temperature = vol.temperature
        self.max_tokens = vol.poem_max_tokens if poem else vol.max_tokens

    def key(self, row: Item) -> str:
        return row.key

    def prompt(self, row: Item) -> LLMRequest:
        user = render(self.template, name=self.template_name, **row.fields)
        messages = ([ChatMessage(role="system", content=self.system)] if self.system else []) + [
            ChatMessage(role="user", content=user)]
        return LLMRequest(messages=messages, temperature=self.temperature, max_tokens=self.max_tokens, tag=self.name)

    def parse(self, row: Item, result: LLMResult) -> dict | Reject:
        text = clean_text(result.text, poem=self.poem)
        if not text:
            return Reject(row.key, f"empty {self.field_name} in the response")
        return {**row.payload, self.field_name: text}


def educator_system(cfg: PoetryConfig) -> str:
    """System prompt for generating teaching data: the persona (full or condensed, per profile), plus the
    banned-phrase list when the profile asks for it."""
    vol = cfg.pipeline.volumes
    persona = cfg.persona if vol.educator_persona == "full" else cfg.persona_condensed
    if not vol.include_banned_list:
        return persona
    never = render(cfg.prompts.never_say, name="never_say", banned="; ".join(cfg.banned_phrases))
    return f"{persona}\n\n{never}"


def _take(items: Sequence, n: int) -> list:
    return list(items) if n <= 0 else list(items[:n])


# ---- the tasks and their rows, one builder per task ---------------------------------------------------

def bad_poems(cfg: PoetryConfig, n: int) -> tuple[TeachingTask, list[Item]]:
    topics = cfg.prompts.bad_poem_topics
    rows = [Item(f"topic {i + 1}: {topics[i % len(topics)]}", {"topic": topics[i % len(topics)]},
                 {"topic": topics[i % len(topics)], "index": i}) for i in range(n)]
    return TeachingTask(cfg, "poetry_bad_poems", "bad_poem", "text", system=None, poem=True), rows


def critiques(cfg: PoetryConfig, good: Sequence[Poem], bad: Sequence[Poem], n: int) -> tuple[TeachingTask, list[Item]]:
    """T1 over good and bad poems, alternating so both kinds are present at any volume."""
    mixed: list[Poem] = []
    for i in range(max(len(good), len(bad))):
        mixed += [p for p in (good[i] if i < len(good) else None, bad[i] if i < len(bad) else None) if p]
    rows = [Item(p.id, {"poem": p.text}, {"poem": p.to_dict()}) for p in _take(mixed, n)]
    return TeachingTask(cfg, "poetry_critiques", "t1_critique", "critique", system=educator_system(cfg)), rows


def briefs(cfg: PoetryConfig, requests: Sequence[str], n: int) -> tuple[TeachingTask, list[Item]]:
    rows = [Item(req, {"request": req}, {"user_request": req}) for req in _take(requests, n)]
    return TeachingTask(cfg, "poetry_briefs", "t2_brief", "brief", system=educator_system(cfg)), rows


def comparisons(cfg: PoetryConfig, good: Sequence[Poem], bad: Sequence[Poem], n: int) -> tuple[TeachingTask, list[Item]]:
    """T3 pairs one good with one bad poem; the good one is A on even pairs and B on odd ones, so the
    model cannot learn "A is always better" (the seed always put the good poem first)."""
    rows = []
    for i, (g, b) in enumerate(_take(list(zip(good, bad)), n)):
        a, bb = (g, b) if i % 2 == 0 else (b, g)
        rows.append(Item(f"{a.id} vs {bb.id}", {"poem_a": a.text, "poem_b": bb.text},
                         {"poem_a": a.to_dict(), "poem_b": bb.to_dict()}))
    return TeachingTask(cfg, "poetry_comparisons", "t3_comparison", "comparison", system=educator_system(cfg)), rows


def autopsies(cfg: PoetryConfig, bad: Sequence[Poem], n: int) -> tuple[TeachingTask, list[Item]]:
    rows = [Item(p.id, {"poem": p.text}, {"poem": p.to_dict()}) for p in _take(bad, n)]
    return TeachingTask(cfg, "poetry_autopsies", "t4_autopsy", "autopsy", system=educator_system(cfg)), rows


def revisions(cfg: PoetryConfig, critique_records: Sequence[dict], n: int) -> tuple[TeachingTask, list[Item]]:
    """T5 step 1: the student's revision (no persona: the student writes it)."""
    rows = [Item(rec["poem"]["id"], {"poem": rec["poem"]["text"], "critique": rec["critique"]},
                 {"poem": rec["poem"], "critique": rec["critique"]}) for rec in _take(critique_records, n)]
    return TeachingTask(cfg, "poetry_dialogues/revision", "t5_revision", "revision", system=None, poem=True), rows


def follow_ups(cfg: PoetryConfig, revised: Sequence[dict]) -> tuple[TeachingTask, list[Item]]:
    """T5 step 2: the educator responds to the revision."""
    rows = [Item(rec["poem"]["id"], {"poem": rec["poem"]["text"], "critique": rec["critique"],
                                     "revision": rec["revision"]}, dict(rec)) for rec in revised]
    return TeachingTask(cfg, "poetry_dialogues/follow_up", "t5_follow_up", "follow_up",
                        system=educator_system(cfg)), rows


def lessons(cfg: PoetryConfig, n: int) -> tuple[TeachingTask, list[Item]]:
    rows = [Item(q, {"question": q}, {"question": q}) for q in _take(cfg.prompts.craft_questions, n)]
    return TeachingTask(cfg, "poetry_lessons", "t6_lesson", "lesson", system=educator_system(cfg)), rows


def poet_pairs(cfg: PoetryConfig, brief_records: Sequence[dict], n: int) -> tuple[TeachingTask, list[Item]]:
    rows = [Item(rec["user_request"], {"brief": rec["brief"]},
                 {"user_request": rec["user_request"], "brief": rec["brief"]}) for rec in _take(brief_records, n)]
    return TeachingTask(cfg, "poetry_poet_pairs", "poet_pair", "poem", system=cfg.poet_system, poem=True), rows


class VerseBriefTask(TeachingTask):
    """The brief a finished poem answers; a brief that mostly repeats the poem is a reject."""

    def parse(self, row: Item, result: LLMResult) -> dict | Reject:
        rec = super().parse(row, result)
        if isinstance(rec, dict) and echoes(rec["brief"], rec["poem"]):
            return Reject(row.key, "the brief repeats the poem instead of describing it")
        return rec


def verse_briefs(cfg: PoetryConfig, poems: Sequence[Poem], n: int) -> tuple[TeachingTask, list[Item]]:
    """Poet pairs grounded in real verse: for each of the first ``n`` shipped poems (``0`` = none) the educator
    writes the brief the poem answers; the record is a poet pair ``brief -> poem`` whose poem is the original."""
    rows = [Item(p.id, {"poem": p.text}, {"poem": p.text, "source": p.source, "origin": "verse"})
            for p in (list(poems[:n]) if n > 0 else [])]
    task = VerseBriefTask(cfg, "poetry_poet_pairs/verse_brief", "verse_brief", "brief", system=educator_system(cfg))
    task.max_tokens = cfg.pipeline.volumes.verse_brief_max_tokens or cfg.pipeline.volumes.max_tokens
    return task, rows


# ---- answers -> records ---------------------------------------------------------------------------------

def clean_text(text: str | None, *, poem: bool = False) -> str:
    """Strip whitespace and, for poems, a wrapping code fence the model sometimes adds."""
    text = (text or "").strip()
    if poem:
        text = re.sub(r"^```\w*\n|\n?```$", "", text).strip()
    return text


def bad_poems_from(records: Sequence[dict]) -> list[Poem]:
    """Turn cliché-draft records (field ``text``) into :class:`Poem` objects of quality ``bad``."""
    return [Poem(id=f"bad:generated/{r['index'] + 1:03d}", text=r["text"], source=f"generated: {r['topic']}",
                 quality="bad") for r in records]
