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

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distillery_assets.poetry.settings import Sampling, StepSampling
from distillery_assets.poetry.text import echoes, render
from distillery_assets.poetry.verse import verse_verdict


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


Ahead = tuple[Chat, str, Callable[[str], str]]
"""The next turn, known while this one is written: ``(its chat, its system prompt, user_prefix)`` where
``user_prefix(text)`` is that turn's user message up to and including ``text``, this turn's reply so far."""

_MARK = "\x00reply\x00"


def _prefix(template: str, name: str, slot: str, **fields: str) -> Callable[[str], str]:
    """``user_prefix`` for a template whose ``{slot}`` is the reply being written: the rendered text before it,
    then the reply so far (stripped at its start, as :func:`_asker` strips every reply)."""
    head = render(template, name=name, **fields, **{slot: _MARK}).split(_MARK)[0]
    return lambda text: head + text.lstrip()


def _verbatim(text: str) -> str:
    return text.lstrip()


def close_readers(readers: Sequence[Any]) -> int:
    """Close a turn's read-aheads (``GGUFChat.read_ahead``); returns the tokens they read. Every one is told to
    stop before any is waited for: they take turns at one evaluation at a time, so closing them one after the
    other let the next in line start a chunk while the one before was joined (three readers of a draft: up to
    three chunks, 150-250 ms, before the critique's first token)."""
    for r in readers:
        r.stop()
    return sum(r.close() for r in readers)


def _asker(steps: list[dict[str, Any]]):
    def ask(who: str, chat: Chat, system: str, user: str, step: str, params: Sampling,
            ahead: Ahead | list[Ahead] | None = None) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        readers = []

        def feed(text: str) -> None:
            for r in readers:
                r.feed(text)

        try:
            # read the next turn (or each turn that may come next) ahead when this chat streams its text and the
            # next one has a free context and a free core for it (GGUFChat; the tutor's --swap holds one model
            # at a time and its chats have no read_ahead); the same model reading its own next turn needs a
            # context besides the one this turn is written in
            if getattr(chat, "streams_text", False):
                for rank, nxt in enumerate([ahead] if isinstance(ahead, tuple) else ahead or []):
                    if callable(getattr(nxt[0], "read_ahead", None)):  # the likelier next turn first (rank 0)
                        reader = nxt[0].read_ahead(nxt[1], nxt[2], beside=messages if nxt[0] is chat else None,
                                                   priority=rank)
                        if reader is not None:
                            readers.append(reader)
            raw = chat(messages, params, on_text=feed) if readers else chat(messages, params)
        finally:
            read = close_readers(readers) if readers else None
        reply = raw if isinstance(raw, Reply) else Reply(str(raw))
        entry = {"step": step, "model": who, "finish_reason": reply.finish_reason, "chars": len(reply.text)}
        if read is not None:
            entry["next_read_ahead_tokens"] = read
        steps.append(entry)
        return reply.text.strip()

    return ask


def draft_for_request(request: str, *, educator: Chat, poet: Chat, prompts: SessionPrompts,
                      sampling: StepSampling, steps: list[dict[str, Any]] | None = None,
                      critique_history: str | None = None) -> tuple[str, str]:
    """The session's first two steps: the educator's brief for ``request``, the poet's draft from that brief.
    ``critique_history``: the history of the critique that follows (``""`` in a session), so the draft's text
    is read ahead into the educator's next prompt; None when no critique follows. While the educator writes
    the brief, the poet reads it into the draft's prompt and, second, the educator's other context reads it
    into the start of that critique (the brief comes before the draft there), so the draft's readers start
    from the draft instead of the brief."""
    ask = _asker(steps if steps is not None else [])
    brief_readers: list[Ahead] = [(poet, prompts.poet_system, _verbatim)]
    if critique_history is not None:
        brief_readers.append((educator, prompts.educator_system,
                              _prefix(prompts.critique, "session_critique", "brief", history=critique_history,
                                      draft="")))
    brief = ask("educator", educator, prompts.educator_system,
                render(prompts.brief, name="session_brief", request=request), "brief", sampling.brief,
                ahead=brief_readers)
    critique_next = None if critique_history is None else _draft_readers(educator, prompts, brief, critique_history)
    draft = ask("poet", poet, prompts.poet_system, brief, "draft", sampling.draft, ahead=critique_next)
    return brief, draft


def _draft_readers(educator: Chat, prompts: SessionPrompts, brief: str, history: str) -> list[Ahead]:
    """What a draft is read into while the poet writes it: the critique that follows (first), the start of
    the revision brief after that critique (brief and draft: then, while the critique is written, only the
    critique is left to read into it), and the final note that follows instead when the critique approves (the
    draft: then only the note's closing instruction is left to read while the critique is written; an approving
    critique is short, and reading the whole note's prompt behind it left ~100 tokens for the note's turn).
    Each gets a context of its own while the educator has one free (``contexts: 3`` in inference.yaml)."""
    return [(educator, prompts.educator_system,
             _prefix(prompts.critique, "session_critique", "draft", brief=brief, history=history)),
            (educator, prompts.educator_system,
             _prefix(prompts.revision_brief, "session_revision_brief", "draft", brief=brief, critique="")),
            (educator, prompts.educator_system, _prefix(prompts.final_note, "session_final_note", "draft"))]


def run_session(request: str, *, educator: Chat, poet: Chat, prompts: SessionPrompts, sampling: StepSampling,
                max_revisions: int = 3, approval_phrases: Sequence[str] = ()) -> dict[str, Any]:
    """One tutoring session; returns the final poem, the educator's note, the brief and every round.

    While one model writes, the turn that will carry that text is read ahead (:data:`Ahead`,
    ``GGUFChat.read_ahead``): the educator's brief into the poet's draft, the draft into the educator's
    critique, the critique into the revision brief (in the educator's second context, when it has one; the
    final note, which follows a critique that approves, in a third), the revision brief into the poet's
    revision, the revision into the next critique or the final note. The turns,
    prompts and replies are the same; only the next turn's first token comes sooner."""
    steps: list[dict[str, Any]] = []
    ask = _asker(steps)

    def educate(user: str, step: str, params: Sampling, ahead: Ahead | list[Ahead] | None = None) -> str:
        return ask("educator", educator, prompts.educator_system, user, step, params, ahead)

    def history_of(rounds: list[dict[str, Any]]) -> str:
        if not rounds:
            return ""
        last = rounds[-1]
        return f"Last round's draft:\n---\n{last['draft']}\n---\nYour critique then:\n{last['critique']}\n"

    brief, draft = draft_for_request(request, educator=educator, poet=poet, prompts=prompts, sampling=sampling,
                                     steps=steps, critique_history="" if max_revisions >= 1 else None)
    rounds: list[dict[str, Any]] = []
    approval = None
    for i in range(1, max_revisions + 1):
        history = history_of(rounds)
        # the critique's text goes next into the revision brief; if it approves, the final note comes instead,
        # whose prompt is known already (each read in a context of its own, when the educator has them)
        revision_next = (educator, prompts.educator_system,
                         _prefix(prompts.revision_brief, "session_revision_brief", "critique", brief=brief,
                                 draft=draft))
        note_prompt = render(prompts.final_note, name="session_final_note", draft=draft)
        note_next = (educator, prompts.educator_system, lambda text: note_prompt)
        critique = educate(render(prompts.critique, name="session_critique", brief=brief, history=history,
                                  draft=draft), f"critique {i}", sampling.critique, [revision_next, note_next])
        rounds.append({"iteration": i, "draft": draft, "critique": critique, "verse": verse_verdict(draft).verse,
                       "critique_echoes_draft": echoes(critique, draft)})
        approval = approved(critique, approval_phrases)
        if approval:
            break
        # the revision brief goes into the poet's revision; the next round's critique starts with the brief
        # and this round's history, all known now, so the educator's other context reads that start meanwhile
        brief_readers = [(poet, prompts.poet_system, _verbatim)]
        if i < max_revisions:
            head = _prefix(prompts.critique, "session_critique", "draft", brief=brief, history=history_of(rounds))("")
            brief_readers.append((educator, prompts.educator_system, lambda text, head=head: head))
        revision_brief = ask("educator", educator, prompts.educator_system,
                             render(prompts.revision_brief, name="session_revision_brief", brief=brief, draft=draft,
                                    critique=critique), f"revision brief {i}", sampling.revision_brief,
                             ahead=brief_readers)
        rounds[-1]["revision_brief"] = revision_brief
        # the revision's text goes next into the next round's critique, or into the final note
        following = (_draft_readers(educator, prompts, brief, history_of(rounds)) if i < max_revisions else
                     [(educator, prompts.educator_system, _prefix(prompts.final_note, "session_final_note", "draft"))])
        draft = ask("poet", poet, prompts.poet_system, revision_brief, f"revision {i}", sampling.revision,
                    ahead=following)
    note = educate(render(prompts.final_note, name="session_final_note", draft=draft), "final note",
                   sampling.final_note)
    final = verse_verdict(draft)
    return {
        "user_request": request,
        "generation_brief": brief,
        "final_poem": draft,
        "educator_note": note,
        "revision_history": rounds,
        "metadata": {"revisions": sum(1 for r in rounds if "revision_brief" in r), "critique_rounds": len(rounds),
                     "approved_by": approval, "steps": steps, "final_is_verse": final.verse,
                     "final_verse_reason": final.reason, "note_echoes_poem": echoes(note, draft)},
    }


def session_prompts(cfg) -> SessionPrompts:
    """The loop's prompts from a :class:`~distillery_assets.poetry.settings.PoetryConfig`."""
    p = cfg.prompts
    return SessionPrompts(educator_system=cfg.persona_condensed, poet_system=cfg.poet_system, brief=p.session_brief,
                          critique=p.session_critique, revision_brief=p.session_revision_brief,
                          final_note=p.session_final_note)


def _poem_md(text: str) -> list[str]:
    """A poem as a fenced block: every line break kept, as written."""
    return ["```text", (text or "(empty)").replace("```", "``\u200b`"), "```"]


def _echo_md(flag: bool, what: str) -> list[str]:
    return [f"_({what} repeats the draft instead of answering it: the small offline model copies its input)_", ""] \
        if flag else []


def _verse_tag(text: str) -> str:
    v = verse_verdict(text)
    return f"verse: {v.reason}" if v.verse else f"not verse: {v.reason}"


def loads_line(meta: dict[str, Any]) -> str | None:
    """The model loads a session waited for, in order (``tutor --swap`` holds one model at a time), or None."""
    loads = meta.get("model_loads")
    if not loads:
        return None
    how = "one model at a time" if meta.get("swap") else "both held for the session"
    return (f"model loads ({how}): " + ", ".join(f"{x['model']} {x['seconds']:.2f} s" for x in loads)
            + f"; total {sum(x['seconds'] for x in loads):.2f} s")


def session_markdown(session: dict[str, Any]) -> str:
    """A readable rendering of one session (for the Dagster UI): the brief and critiques as prose, every poem
    in a block that keeps its line breaks, each draft labelled verse or not (``poetry.verse``)."""
    mark = _cut_marker(session)
    out = [f"### {session['user_request']}", "", f"**Brief** (educator){mark('brief')}", "",
           session["generation_brief"], ""]
    for r in session["revision_history"]:
        i = r["iteration"]
        out += [f"**Draft {i}** (poet; {_verse_tag(r['draft'])}){mark(_draft_step(i))}", "", *_poem_md(r["draft"]),
                "", f"**Critique {i}** (educator){mark(f'critique {i}')}", "", r["critique"], "",
                *_echo_md(r.get("critique_echoes_draft", False), "the critique")]
    out += [f"**Final poem** ({_verse_tag(session['final_poem'])})", "", *_poem_md(session["final_poem"]), "",
            f"**Educator's note**{mark('final note')}", "", session["educator_note"], "",
            *_echo_md(session["metadata"].get("note_echoes_poem", False), "the note")]
    meta = session["metadata"]
    finishes = ", ".join(f"{s['step']}={s['finish_reason']}" for s in meta["steps"])
    out += [f"_critique rounds: {meta['critique_rounds']}, approved by: {meta['approved_by']!r}; finish: {finishes}_", ""]
    if loads_line(meta):
        out += [f"_{loads_line(meta)}_", ""]
    return "\n".join(out)


def _prose(text: str, width: int, indent: str = "  ") -> list[str]:
    paragraphs = [p for p in (text or "(empty)").split("\n\n") if p.strip()] or ["(empty)"]
    lines: list[str] = []
    for p in paragraphs:
        lines += textwrap.wrap(" ".join(p.split()), width=width, initial_indent=indent, subsequent_indent=indent)
        lines.append("")
    return lines


def _poem(text: str, indent: str = "      ") -> list[str]:
    return [indent + line if line.strip() else "" for line in (text or "(empty)").splitlines()] + [""]


def _cut_marker(session: dict[str, Any]):
    """``mark(step)``: ' [cut at max_tokens]' when that step's reply stopped at its token budget, else ''."""
    cut = {s["step"] for s in session["metadata"].get("steps", []) if s.get("finish_reason") == "length"}
    return lambda step: " [cut at max_tokens]" if step in cut else ""


def _draft_step(iteration: int) -> str:
    return "draft" if iteration == 1 else f"revision {iteration - 1}"


def session_text(session: dict[str, Any], width: int = 88) -> str:
    """The session for a terminal (what ``demo.sh`` and the tutor CLI print): headings, prose wrapped to
    ``width``, poems indented with their own line breaks, a reply that hit its token budget marked as cut."""
    rule, mark = "=" * min(width, 72), _cut_marker(session)
    out = [rule, f"Tutor session: {session['user_request']}", rule, "", f"BRIEF (educator){mark('brief')}",
           *_prose(session["generation_brief"], width)]
    for r in session["revision_history"]:
        i = r["iteration"]
        out += [f"DRAFT {i} (poet; {_verse_tag(r['draft'])}){mark(_draft_step(i))}", *_poem(r["draft"]),
                f"CRITIQUE {i} (educator){mark(f'critique {i}')}", *_prose(r["critique"], width)]
        if r.get("critique_echoes_draft"):
            out += ["  (the critique repeats the draft: the small offline model copies its input)", ""]
        if r.get("revision_brief"):
            out += [f"REVISION BRIEF {i} (educator){mark(f'revision brief {i}')}", *_prose(r["revision_brief"], width)]
    out += [f"FINAL POEM ({_verse_tag(session['final_poem'])})", *_poem(session["final_poem"]),
            f"EDUCATOR'S NOTE{mark('final note')}", *_prose(session["educator_note"], width)]
    meta = session["metadata"]
    if meta.get("note_echoes_poem"):
        out += ["  (the note repeats the poem: the small offline model copies its input)", ""]
    out.append(f"critique rounds: {meta['critique_rounds']}; approved by: {meta['approved_by'] or 'none'}; "
               f"replies cut at max_tokens: {sum(1 for s in meta['steps'] if s['finish_reason'] == 'length')} of "
               f"{len(meta['steps'])}")
    if loads_line(meta):
        out.append(loads_line(meta))
    return "\n".join(out)
