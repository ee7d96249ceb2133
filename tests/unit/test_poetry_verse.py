"""The verse rule (poetry.verse) and the session renderings that keep poems as poems."""

from distillery_assets.poetry.session import Reply, run_session, session_markdown, session_prompts, session_text
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.text import echoes
from distillery_assets.poetry.verse import verse_verdict

POEM = "Snow on the sill,\nthe kettle ticking,\nlight leans in at four\nand stays a while."
PROSE = ("This poem is about winter light. It explores how the light falls on snow in the late afternoon "
         "and what that light means to the speaker, who remembers a house.")


def test_short_distinct_lines_are_verse():
    v = verse_verdict(POEM)
    assert v.verse and v.lines == 4


def test_prose_about_the_poem_is_not_verse():
    assert not verse_verdict(PROSE).verse
    lines = "\n".join(["The poem shows the light", "on the snow", "in the yard", "at four"])
    assert verse_verdict(lines).reason.startswith("talks about the poem")


def test_long_lines_and_loops_are_not_verse():
    paragraph = "\n".join(["a line that goes on and on, well past any breath a reader could take in one go, "
                           "and then keeps going, clause after clause, as prose does"] + ["short", "lines", "here"])
    assert "reads as a paragraph" in verse_verdict(paragraph).reason
    wide = "\n".join(["a line of seventy characters or so, long for verse but not a paragraph"] * 2 + ["a", "b"])
    assert "lines are 60 characters or fewer" in verse_verdict(wide).reason
    assert "looping" in verse_verdict("\n".join(["the same line again"] * 6)).reason
    assert "fewer than 4" in verse_verdict("one\ntwo").reason


def test_echo_detects_a_copied_critique():
    assert echoes(POEM.replace("\n", " "), POEM)
    assert not echoes("Line 2 sags; cut 'ticking' and trust the sill.", POEM)


class Scripted:
    def __init__(self, answers):
        self.answers = list(answers)

    def __call__(self, messages, sampling):
        return Reply(self.answers.pop(0), "stop")


def _session(educator, poet):
    cfg = PoetryConfig()
    return run_session("Write a poem about winter light", educator=Scripted(educator), poet=Scripted(poet),
                       prompts=session_prompts(cfg), sampling=cfg.inference.sampling, max_revisions=1,
                       approval_phrases=cfg.inference.approval_phrases)


def test_renderings_keep_line_breaks_and_say_what_is_verse_and_what_is_echo():
    s = _session(["A brief about light.", POEM, "rb", "A note."], [PROSE, POEM])
    md = session_markdown(s)
    assert "```text\nSnow on the sill,\nthe kettle ticking," in md  # the final poem, line by line
    assert "(poet; not verse:" in md and "**Final poem** (verse: 4 short lines)" in md
    assert "the critique repeats the draft" not in md  # critique 1 is POEM, the draft was PROSE
    text = session_text(s)
    assert "      Snow on the sill,\n      the kettle ticking," in text
    assert "FINAL POEM (verse: 4 short lines)" in text and "EDUCATOR'S NOTE" in text
    assert s["metadata"]["final_is_verse"] is True


def test_a_critique_that_copies_the_draft_is_flagged():
    s = _session(["brief", POEM, "rb", "note"], [POEM, POEM])
    assert s["revision_history"][0]["critique_echoes_draft"] is True
    assert "the critique repeats the draft" in session_text(s)


class Budgeted(Scripted):
    """Replies whose finish reasons are scripted too."""

    def __call__(self, messages, sampling):
        text, finish = self.answers.pop(0)
        return Reply(text, finish)


def test_a_reply_cut_at_max_tokens_is_marked_where_it_is_shown():
    cfg = PoetryConfig()
    s = run_session("Write a poem about winter light",
                    educator=Budgeted([("A brief that ran on and", "length"), ("this poem has found its shape", "stop"),
                                       ("A note.", "stop")]),
                    poet=Budgeted([(POEM, "stop")]), prompts=session_prompts(cfg), sampling=cfg.inference.sampling,
                    max_revisions=1, approval_phrases=cfg.inference.approval_phrases)
    text, md = session_text(s), session_markdown(s)
    assert "BRIEF (educator) [cut at max_tokens]" in text and "**Brief** (educator) [cut at max_tokens]" in md
    assert "DRAFT 1 (poet; verse: 4 short lines)\n" in text  # the draft finished: no marker
    assert "EDUCATOR'S NOTE\n" in text and text.count("[cut at max_tokens]") == 1
