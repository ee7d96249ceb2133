from distillery_assets.poetry.session import Reply, approved, run_session, session_markdown, session_prompts
from distillery_assets.poetry.settings import PoetryConfig


class Scripted:
    """A chat callable that answers from a list and records what it was asked."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, messages, sampling):
        self.calls.append((messages, sampling))
        return Reply(self.answers.pop(0), "stop")


def _run(educator, poet, max_revisions=3):
    cfg = PoetryConfig()
    return cfg, run_session("Write a poem about winter light", educator=educator, poet=poet,
                            prompts=session_prompts(cfg), sampling=cfg.inference.sampling,
                            max_revisions=max_revisions, approval_phrases=cfg.inference.approval_phrases)


def test_loop_ends_early_on_approval_phrase():
    educator = Scripted(["BRIEF", "line 2 sags; cut it", "REV-BRIEF", "Yes: This poem has FOUND ITS SHAPE.", "NOTE"])
    poet = Scripted(["DRAFT1", "DRAFT2"])
    cfg, s = _run(educator, poet)
    assert s["final_poem"] == "DRAFT2" and s["educator_note"] == "NOTE" and s["generation_brief"] == "BRIEF"
    assert [r["draft"] for r in s["revision_history"]] == ["DRAFT1", "DRAFT2"]
    assert s["metadata"]["approved_by"] == "found its shape" and s["metadata"]["critique_rounds"] == 2
    assert s["metadata"]["revisions"] == 1
    # poet is prompted with the brief, then the revision brief; each with the poet system prompt
    assert poet.calls[0][0][1]["content"] == "BRIEF" and poet.calls[1][0][1]["content"] == "REV-BRIEF"
    assert poet.calls[0][0][0]["content"] == cfg.poet_system
    assert educator.calls[0][0][0]["content"] == cfg.persona_condensed
    # the second critique sees the draft under review and last round's critique
    second = educator.calls[3][0][1]["content"]
    assert "DRAFT2" in second and "line 2 sags" in second
    assert poet.calls[0][1] == cfg.inference.sampling.draft and poet.calls[1][1] == cfg.inference.sampling.revision
    assert educator.answers == [] and poet.answers == []


def test_loop_stops_after_max_revisions_without_approval():
    educator = Scripted(["B", "c1", "rb1", "c2", "rb2", "NOTE"])
    poet = Scripted(["d1", "d2", "d3"])
    _, s = _run(educator, poet, max_revisions=2)
    assert s["final_poem"] == "d3" and s["metadata"]["approved_by"] is None
    assert s["metadata"]["critique_rounds"] == 2
    assert [st["step"] for st in s["metadata"]["steps"]] == [
        "brief", "draft", "critique 1", "revision brief 1", "revision 1", "critique 2", "revision brief 2",
        "revision 2", "final note"]
    md = session_markdown(s)
    assert "**Final poem**" in md and "d3" in md and "final note=stop" in md


def test_plain_string_replies_and_approval_helper():
    _, s = _run(lambda m, p: "this is ready", lambda m, p: "poem")
    assert s["metadata"]["critique_rounds"] == 1 and s["metadata"]["steps"][0]["finish_reason"] is None
    assert approved("Nothing left to cut.", ["nothing left to cut"]) == "nothing left to cut"
    assert approved("keep going", ["this is ready"]) is None


def test_a_draft_is_read_into_the_critique_the_revision_brief_and_the_final_note():
    """While the poet writes a draft, the educator's next turns that carry it are read ahead: the critique, the
    revision brief after it, and the final note that comes instead when the critique approves (an approving
    critique is short: reading the note's whole prompt behind it left ~100 tokens to its own turn)."""
    from distillery_assets.poetry.session import _draft_readers

    cfg = PoetryConfig()
    prompts = session_prompts(cfg)
    educator = object()
    readers = _draft_readers(educator, prompts, "BRIEF", "")
    assert [r[0] for r in readers] == [educator] * 3 and {r[1] for r in readers} == {prompts.educator_system}
    critique, revision_brief, note = (r[2]("DRAFT SO FAR") for r in readers)
    full_note = prompts.final_note.format(draft="DRAFT SO FAR")
    assert full_note.startswith(note) and note.endswith("DRAFT SO FAR")
    assert prompts.critique.format(brief="BRIEF", history="", draft="DRAFT SO FAR").startswith(critique)
    assert revision_brief.endswith("DRAFT SO FAR") and "BRIEF" in revision_brief


class Reading(Scripted):
    """A scripted chat that streams its answer and records the read-aheads asked of it: for each, when closed
    (right after the turn it ran beside), the prompt it had read."""

    streams_text = True

    def __init__(self, answers, log):
        super().__init__(answers)
        self.log = log

    def __call__(self, messages, sampling, on_text=None):
        self.log.append(("ask", messages[1]["content"]))
        reply = super().__call__(messages, sampling)
        if on_text is not None:
            on_text(reply.text)
        return reply

    def read_ahead(self, system, user_prefix, *, beside=None, priority=0):
        log, chat = self.log, self

        class Reader:
            text = ""

            def feed(self, text):
                self.text = text

            def stop(self):
                pass

            def close(self):
                log.append(("read", chat, user_prefix(self.text), beside is not None, priority))
                return 1

        return Reader()


def test_a_critique_s_start_is_read_while_the_brief_before_it_is_written():
    """The critique's prompt starts with the brief (and, from round 2, the last round's draft and critique),
    so it is read before the draft it carries exists: while the educator writes the brief (its own text, in a
    context beside the one it writes in) and, for the next round, while it writes the revision brief. The
    draft's readers then start from the draft."""
    log = []
    educator = Reading(["BRIEF", "CRIT1", "REVBRIEF1", "CRIT2", "REVBRIEF2", "NOTE"], log)
    poet = Reading(["DRAFT1", "DRAFT2", "DRAFT3"], log)
    cfg, s = _run(educator, poet, max_revisions=2)
    prompts = session_prompts(cfg)
    critique = [c[0][1]["content"] for c in educator.calls[1::2][:2]]  # critique 1 and 2 as asked
    assert critique[0] == prompts.critique.format(brief="BRIEF", history="", draft="DRAFT1")
    turn, reads = None, {}
    for event in log:  # a turn's readers are closed (logged) when it is done
        if event[0] == "ask":
            turn = event[1]
        else:
            reads.setdefault(turn, []).append(event[1:])
    brief_prompt, revision_brief_1 = educator.calls[0][0][1]["content"], educator.calls[2][0][1]["content"]
    # beside the brief: the poet's draft prompt (the brief itself) and the critique's start, read by the educator
    # beside its own writing, second in line
    own = [(prefix, priority) for chat, prefix, beside, priority in reads[brief_prompt]
           if chat is educator and beside]
    assert len(own) == 1 and own[0][1] == 1 and critique[0].startswith(own[0][0]) and own[0][0].endswith("BRIEF")
    # beside revision brief 1: round 2's critique up to its draft (brief, DRAFT1 and CRIT1 in its history)
    own = [(prefix, priority) for chat, prefix, beside, priority in reads[revision_brief_1]
           if chat is educator and beside]
    assert len(own) == 1 and own[0][1] == 1 and critique[1].startswith(own[0][0])
    assert critique[1][len(own[0][0]):].lstrip().startswith("DRAFT2") and "CRIT1" in own[0][0]
    # the last revision brief has no critique after it, so nothing of the educator's is read beside it
    assert not [r for r in reads[educator.calls[4][0][1]["content"]] if r[0] is educator]
    assert s["final_poem"] == "DRAFT3"
