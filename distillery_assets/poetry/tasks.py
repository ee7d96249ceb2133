"""LLM work for the teaching data: build one request per item, turn results into records or rejects.

The library stays free of the LLM engine: a :class:`PromptSpec` is a plain description (messages,
temperature, max_tokens, tag) that the Dagster layer turns into ``distillery_assets.llm.LLMRequest``.
Results are read duck-typed (``ok``, ``text``, ``error``, ``finish_reason``), so tests can script them.

Record schemas (one JSON object per line, as in the seed, but never with an empty field):

=============  ===========================================================
critique (T1)  ``{"poem": Poem, "critique"}``
brief (T2)     ``{"user_request", "brief"}``
comparison     ``{"poem_a": Poem, "poem_b": Poem, "comparison"}``
autopsy (T4)   ``{"poem": Poem, "autopsy"}``
dialogue (T5)  ``{"poem": Poem, "critique", "revision", "follow_up"}``
lesson (T6)    ``{"question", "lesson"}``
poet_pair      ``{"user_request", "brief", "poem"}``
=============  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from distillery_assets.poetry.raw_poems import Poem, Reject
from distillery_assets.poetry.settings import PoetryConfig

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


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


@dataclass(frozen=True)
class PromptSpec:
    key: str  # what the request is about (poem id, request text): names it in rejects
    user: str
    system: str | None
    temperature: float
    max_tokens: int
    tag: str
    payload: dict[str, Any] = field(default_factory=dict, compare=False)  # carried into the record

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.user}]


class ResultLike(Protocol):
    ok: bool
    text: str | None
    error: str | None


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


def _spec(cfg: PoetryConfig, tag: str, key: str, user: str, payload: dict, *, system: str | None,
          poem: bool = False) -> PromptSpec:
    vol = cfg.pipeline.volumes
    return PromptSpec(key=key, user=user, system=system, temperature=vol.temperature,
                      max_tokens=vol.poem_max_tokens if poem else vol.max_tokens, tag=tag, payload=payload)


# ---- request builders, one per task -------------------------------------------------------------------

def bad_poem_specs(cfg: PoetryConfig, n: int) -> list[PromptSpec]:
    topics = cfg.prompts.bad_poem_topics
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        user = render(cfg.prompts.bad_poem, name="bad_poem", topic=topic)
        out.append(_spec(cfg, "poetry_bad_poems", f"topic {i + 1}: {topic}", user, {"topic": topic, "index": i},
                         system=None, poem=True))
    return out


def critique_specs(cfg: PoetryConfig, good: Sequence[Poem], bad: Sequence[Poem], n: int) -> list[PromptSpec]:
    """T1 over good and bad poems, alternating so both kinds are present at any volume."""
    mixed: list[Poem] = []
    for i in range(max(len(good), len(bad))):
        mixed += [p for p in (good[i] if i < len(good) else None, bad[i] if i < len(bad) else None) if p]
    system = educator_system(cfg)
    return [_spec(cfg, "poetry_critiques", p.id, render(cfg.prompts.t1_critique, name="t1_critique", poem=p.text),
                  {"poem": p.to_dict()}, system=system) for p in _take(mixed, n)]


def brief_specs(cfg: PoetryConfig, requests: Sequence[str], n: int) -> list[PromptSpec]:
    system = educator_system(cfg)
    return [_spec(cfg, "poetry_briefs", req, render(cfg.prompts.t2_brief, name="t2_brief", request=req),
                  {"user_request": req}, system=system) for req in _take(requests, n)]


def comparison_specs(cfg: PoetryConfig, good: Sequence[Poem], bad: Sequence[Poem], n: int) -> list[PromptSpec]:
    """T3 pairs one good with one bad poem; the good one is A on even pairs and B on odd ones, so the
    model cannot learn "A is always better" (the seed always put the good poem first)."""
    system = educator_system(cfg)
    specs = []
    for i, (g, b) in enumerate(_take(list(zip(good, bad)), n)):
        a, bb = (g, b) if i % 2 == 0 else (b, g)
        user = render(cfg.prompts.t3_comparison, name="t3_comparison", poem_a=a.text, poem_b=bb.text)
        specs.append(_spec(cfg, "poetry_comparisons", f"{a.id} vs {bb.id}", user,
                           {"poem_a": a.to_dict(), "poem_b": bb.to_dict()}, system=system))
    return specs


def autopsy_specs(cfg: PoetryConfig, bad: Sequence[Poem], n: int) -> list[PromptSpec]:
    system = educator_system(cfg)
    return [_spec(cfg, "poetry_autopsies", p.id, render(cfg.prompts.t4_autopsy, name="t4_autopsy", poem=p.text),
                  {"poem": p.to_dict()}, system=system) for p in _take(bad, n)]


def revision_specs(cfg: PoetryConfig, critiques: Sequence[dict], n: int) -> list[PromptSpec]:
    """T5 step 1: the student's revision (no persona: the student writes it)."""
    specs = []
    for rec in _take(critiques, n):
        user = render(cfg.prompts.t5_revision, name="t5_revision", poem=rec["poem"]["text"], critique=rec["critique"])
        specs.append(_spec(cfg, "poetry_dialogues/revision", rec["poem"]["id"], user,
                           {"poem": rec["poem"], "critique": rec["critique"]}, system=None, poem=True))
    return specs


def follow_up_specs(cfg: PoetryConfig, revised: Sequence[dict]) -> list[PromptSpec]:
    """T5 step 2: the educator responds to the revision."""
    system = educator_system(cfg)
    specs = []
    for rec in revised:
        user = render(cfg.prompts.t5_follow_up, name="t5_follow_up", poem=rec["poem"]["text"],
                      critique=rec["critique"], revision=rec["revision"])
        specs.append(_spec(cfg, "poetry_dialogues/follow_up", rec["poem"]["id"], user, dict(rec), system=system))
    return specs


def lesson_specs(cfg: PoetryConfig, n: int) -> list[PromptSpec]:
    system = educator_system(cfg)
    return [_spec(cfg, "poetry_lessons", q, render(cfg.prompts.t6_lesson, name="t6_lesson", question=q),
                  {"question": q}, system=system) for q in _take(cfg.prompts.craft_questions, n)]


def poet_pair_specs(cfg: PoetryConfig, briefs: Sequence[dict], n: int) -> list[PromptSpec]:
    return [_spec(cfg, "poetry_poet_pairs", rec["user_request"],
                  render(cfg.prompts.poet_pair, name="poet_pair", brief=rec["brief"]),
                  {"user_request": rec["user_request"], "brief": rec["brief"]}, system=cfg.poet_system, poem=True)
            for rec in _take(briefs, n)]


# ---- results -> records ---------------------------------------------------------------------------------

def clean_text(text: str | None, *, poem: bool = False) -> str:
    """Strip whitespace and, for poems, a wrapping code fence the model sometimes adds."""
    text = (text or "").strip()
    if poem:
        text = re.sub(r"^```\w*\n|\n?```$", "", text).strip()
    return text


@dataclass
class Collected:
    records: list[dict]
    rejects: list[Reject]
    truncated: int  # records whose generation stopped at max_tokens (kept, counted)


def collect(specs: Sequence[PromptSpec], results: Iterable[ResultLike], field_name: str, *,
            poem: bool = False, make: Callable[[PromptSpec, str], dict] | None = None) -> Collected:
    """Pair each spec with its result; a failed or empty result becomes a reject, never a record."""
    results = list(results)
    if len(results) != len(specs):
        raise ValueError(f"{len(specs)} requests but {len(results)} results (the LLM client must keep order)")
    records, rejects, truncated = [], [], 0
    for spec, res in zip(specs, results):
        if not getattr(res, "ok", False):
            rejects.append(Reject(f"{spec.tag} [{spec.key}]", f"llm call failed: {getattr(res, 'error', None) or 'unknown error'}"))
            continue
        text = clean_text(getattr(res, "text", None), poem=poem)
        if not text:
            rejects.append(Reject(f"{spec.tag} [{spec.key}]", f"empty {field_name} in the response"))
            continue
        if getattr(res, "finish_reason", None) == "length":
            truncated += 1
        records.append(make(spec, text) if make else {**spec.payload, field_name: text})
    return Collected(records, rejects, truncated)


def bad_poems_from(collected: Collected) -> list[Poem]:
    """Turn collected cliché drafts (field ``text``) into :class:`Poem` objects of quality ``bad``."""
    return [Poem(id=f"bad:generated/{r['index'] + 1:03d}", text=r["text"], source=f"generated: {r['topic']}",
                 quality="bad") for r in collected.records]
