"""The educator/poet tutor loop as a plain function over two chat callables.

    brief  = educator(brief prompt)
    draft  = poet(brief)
    repeat up to max_revisions:
        critique = educator(brief + last round + draft)
        stop early if the critique contains an approval phrase
        revision_brief = educator(brief + draft + critique)
        draft = poet(revision_brief)
    note = educator(final draft)

A chat callable takes ``(messages, sampling)`` and returns a :class:`Reply` (or a plain string), so the
loop runs against GGUF files (:mod:`distillery_assets.poetry.gguf_chat`) or scripted fakes in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distillery_assets.poetry.settings import Sampling, StepSampling
from distillery_assets.poetry.tasks import render


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None = None  # "stop" (end-of-turn) or "length" (hit max_tokens)


Chat = Callable[[list[dict[str, str]], Sampling], "Reply | str"]


@dataclass(frozen=True)
class SessionPrompts:
    educator_system: str
    poet_system: str
    brief: str
    critique: str
    revision_brief: str
    final_note: str


def approved(critique: str, phrases: Sequence[str]) -> str | None:
    """The approval phrase found in ``critique`` (case-insensitive), if any."""
    low = critique.lower()
    return next((p for p in phrases if p.lower() in low), None)


def run_session(request: str, *, educator: Chat, poet: Chat, prompts: SessionPrompts, sampling: StepSampling,
                max_revisions: int = 3, approval_phrases: Sequence[str] = ()) -> dict[str, Any]:
    """One tutoring session; returns the final poem, the educator's note, the brief and every round."""
    steps: list[dict[str, Any]] = []

    def ask(who: str, chat: Chat, system: str, user: str, step: str, params: Sampling) -> str:
        raw = chat([{"role": "system", "content": system}, {"role": "user", "content": user}], params)
        reply = raw if isinstance(raw, Reply) else Reply(str(raw))
        steps.append({"step": step, "model": who, "finish_reason": reply.finish_reason, "chars": len(reply.text)})
        return reply.text.strip()

    def educate(user: str, step: str, params: Sampling) -> str:
        return ask("educator", educator, prompts.educator_system, user, step, params)

    def write(user: str, step: str, params: Sampling) -> str:
        return ask("poet", poet, prompts.poet_system, user, step, params)

    brief = educate(render(prompts.brief, name="session_brief", request=request), "brief", sampling.brief)
    draft = write(brief, "draft", sampling.draft)
    rounds: list[dict[str, Any]] = []
    approval = None
    for i in range(1, max_revisions + 1):
        history = ""
        if rounds:
            last = rounds[-1]
            history = f"Last round's draft:\n---\n{last['draft']}\n---\nYour critique then:\n{last['critique']}\n"
        critique = educate(render(prompts.critique, name="session_critique", brief=brief, history=history,
                                  draft=draft), f"critique {i}", sampling.critique)
        rounds.append({"iteration": i, "draft": draft, "critique": critique})
        approval = approved(critique, approval_phrases)
        if approval:
            break
        revision_brief = educate(render(prompts.revision_brief, name="session_revision_brief", brief=brief,
                                        draft=draft, critique=critique), f"revision brief {i}", sampling.revision_brief)
        rounds[-1]["revision_brief"] = revision_brief
        draft = write(revision_brief, f"revision {i}", sampling.revision)
    note = educate(render(prompts.final_note, name="session_final_note", draft=draft), "final note",
                   sampling.final_note)
    return {
        "user_request": request,
        "generation_brief": brief,
        "final_poem": draft,
        "educator_note": note,
        "revision_history": rounds,
        "metadata": {"revisions": sum(1 for r in rounds if "revision_brief" in r), "critique_rounds": len(rounds),
                     "approved_by": approval, "steps": steps},
    }


def session_prompts(cfg) -> SessionPrompts:
    """The loop's prompts from a :class:`~distillery_assets.poetry.settings.PoetryConfig`."""
    p = cfg.prompts
    return SessionPrompts(educator_system=cfg.persona_condensed, poet_system=cfg.poet_system, brief=p.session_brief,
                          critique=p.session_critique, revision_brief=p.session_revision_brief,
                          final_note=p.session_final_note)


def session_markdown(session: dict[str, Any]) -> str:
    """A readable rendering of one session (for the Dagster UI and the CLI)."""
    out = [f"### {session['user_request']}", "", "**Brief**", "", session["generation_brief"], ""]
    for r in session["revision_history"]:
        out += [f"**Draft {r['iteration']}**", "", "```", r["draft"], "```", "", f"**Critique {r['iteration']}**", "",
                r["critique"], ""]
    out += ["**Final poem**", "", "```", session["final_poem"], "```", "", "**Educator's note**", "",
            session["educator_note"], ""]
    meta = session["metadata"]
    finishes = ", ".join(f"{s['step']}={s['finish_reason']}" for s in meta["steps"])
    out += [f"_critique rounds: {meta['critique_rounds']}, approved by: {meta['approved_by']!r}; finish: {finishes}_", ""]
    return "\n".join(out)
