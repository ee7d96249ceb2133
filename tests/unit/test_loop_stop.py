"""Issue 26, no wasted work: the local provider stops a reply caught in a repetition loop as soon as the loop is
plain (finish reason ``repetition``, a failure the client does not ask again), instead of letting it run to
``max_tokens`` and, cut off, to the client's doubled budget.

The detector (``repetition_loop``) is checked on token lists, on real poems whose refrains and repeated words
must pass untouched (tokenized by the bundled SmolLM2), and through the provider and the client on the real
SmolLM2-135M with greedy decoding (one of the main job's own verse-brief requests, which loops). Token counts
only, never time."""

from __future__ import annotations

import numpy as np
import pytest

from distillery_assets.llm.providers import local
from distillery_assets.llm.providers.local import (LOOP_MIN_REPEATS, LOOP_MIN_TOKENS, LocalProvider, _Asking,
                                                   repetition_loop)
from distillery_assets.llm.types import ChatMessage, LLMRequest

WREN = ("You are Wren, a poetry teacher. Start from what is alive in a draft, quote exact words, name the kind of "
        "problem, and give one concrete direction. Plain, warm, exact. No scores, no rubrics, no bullet points, no "
        "generic praise.")
# one of poetry_poet_pairs' verse briefs (Dickinson, "The pedigree of honey"); greedy, SmolLM2 ends up repeating
# "A flower that is not aristocracy," line after line
LOOPING = [ChatMessage(role="system", content=WREN), ChatMessage(role="user", content=(
    "Here is a finished poem.\n---\nThe pedigree of honey\nDoes not concern the bee;\nA clover, any time, to him\n"
    "Is aristocracy.\n---\nWrite the brief a poet could have been given before writing it: what to write about, "
    "the angle, the\nimages to draw on, the form and line length, the sound, and the turn at the end. Two or three "
    "short\nsentences to the poet. Do not quote the poem.\n"))]

# Real poems that repeat themselves on purpose (public domain): a refrain line between other lines, a word
# rung four times in a row, a line that opens and closes the poem, a stanza's refrain.
THE_BELLS = """Hear the sledges with the bells—
Silver bells!
What a world of merriment their melody foretells!
How they tinkle, tinkle, tinkle,
In the icy air of night!
While the stars that oversprinkle
All the heavens, seem to twinkle
With a crystalline delight;
Keeping time, time, time,
In a sort of Runic rhyme,
To the tintinnabulation that so musically wells
From the bells, bells, bells, bells,
Bells, bells, bells—
From the jingling and the tinkling of the bells.
"""
BREAK_BREAK_BREAK = """Break, break, break,
On thy cold gray stones, O Sea!
And I would that my tongue could utter
The thoughts that arise in me.

O, well for the fisherman's boy,
That he shouts with his sister at play!
O, well for the sailor lad,
That he sings in his boat on the bay!

And the stately ships go on
To their haven under the hill;
But O for the touch of a vanish'd hand,
And the sound of a voice that is still!

Break, break, break,
At the foot of thy crags, O Sea!
But the tender grace of a day that is dead
Will never come back to me.
"""
I_HIDE_MYSELF = """I hide myself within my flower,
That wearing on your breast,
You, unsuspecting, wear me too --
And angels know the rest.

I hide myself within my flower,
That, fading from your vase,
You, unsuspecting, feel for me
Almost a loneliness.
"""
BOOTS = """We're foot—slog—slog—slog—sloggin' over Africa—
Foot—foot—foot—foot—sloggin' over Africa—
(Boots—boots—boots—boots—movin' up an' down again!)
There's no discharge in the war!

Seven—six—eleven—five—nine-an'-twenty mile to-day—
Four—eleven—seventeen—thirty-two the day before—
(Boots—boots—boots—boots—movin' up an' down again!)
There's no discharge in the war!
"""


def _first_loop(tokens, **kw) -> int | None:
    """The number of tokens after which ``repetition_loop`` first fires, as it would during generation."""
    return next((n for n in range(1, len(tokens) + 1) if repetition_loop(tokens[:n], **kw)), None)


def test_a_repeated_line_is_a_loop_once_it_covers_the_threshold():
    opening = list(range(100, 130))  # 30 tokens of varied text
    line = [7, 8, 9, 10, 11, 12, 13, 14, 15]  # a 9-token line
    reply = opening + line * 8
    repeats = max(LOOP_MIN_REPEATS, -(-LOOP_MIN_TOKENS // len(line)))
    assert _first_loop(reply) == len(opening) + repeats * len(line)
    assert repetition_loop(reply) == len(line)  # the span, not a multiple of it
    assert repetition_loop(opening + [5] * LOOP_MIN_TOKENS) == 1  # one token over and over
    assert repetition_loop(opening + line * (repeats - 1)) == 0  # one repeat short


def test_short_replies_and_short_repeats_are_untouched():
    assert repetition_loop([]) == 0 and repetition_loop([3]) == 0
    assert _first_loop([5] * (LOOP_MIN_TOKENS - 1)) is None  # a run shorter than the threshold
    assert _first_loop([1, 2] * ((LOOP_MIN_TOKENS - 1) // 2)) is None
    assert _first_loop(list(range(1000))) is None  # nothing repeats


def test_a_span_that_returns_after_other_tokens_is_not_a_loop():
    refrain = list(range(10, 22))
    verses = [list(range(100 + 20 * i, 115 + 20 * i)) for i in range(8)]
    poem = [t for verse in verses for t in verse + refrain]  # the refrain after every verse, 8 times
    assert _first_loop(poem) is None


@pytest.fixture(scope="module")
def provider():
    provider = LocalProvider(n_ctx=1024, n_threads=1)  # 2 threads spin under load (issue 26)
    return provider, provider.model_id(None)


def _llm(provider):
    p, model = provider
    return p._model(p._resolve_path(model))[0]


@pytest.mark.parametrize("poem", [THE_BELLS, BREAK_BREAK_BREAK, I_HIDE_MYSELF, BOOTS],
                         ids=["the_bells", "break_break_break", "i_hide_myself", "boots"])
def test_real_poems_with_refrains_are_not_loops(provider, poem):
    tokens = _llm(provider).tokenize(poem.encode("utf-8"), add_bos=False, special=False)
    assert _first_loop(tokens) is None
    twice = tokens + tokens  # a poem quoted twice in a row is a repeat, but not yet a loop
    assert _first_loop(twice) is None


def test_the_bells_repeat_in_a_row_and_only_the_threshold_spares_them(provider):
    """The refrain test above is not vacuous: "The Bells" does repeat itself in a row ("tinkle, tinkle, tinkle",
    "time, time, time", "bells, bells, bells, bells"); only the loop's minimum length spares it."""
    tokens = _llm(provider).tokenize(THE_BELLS.encode("utf-8"), add_bos=False, special=False)
    assert _first_loop(tokens, min_tokens=1) is not None


class _ScriptedLlama:
    """Just enough of ``llama_cpp.Llama.create_completion``'s stopping-criteria protocol: before each new token
    the criteria see the context so far (prompt and reply), as a numpy array."""

    def __init__(self, reply: list[int]):
        self.reply, self.seen = reply, []

    def create_completion(self, prompt, max_tokens, stopping_criteria=None, **kwargs):
        out = []
        for token in self.reply[:max_tokens]:
            ids = np.array(list(prompt) + out, dtype=np.intc)
            if stopping_criteria is not None and stopping_criteria(ids, None):
                return {"finish_reason": "stop", "tokens": out}
            out.append(token)
        return {"finish_reason": "length", "tokens": out}


def test_the_prompt_is_not_part_of_the_reply():
    loop = [4, 5, 6, 7] * 30  # a prompt that repeats itself (a quoted chant, a list)
    asking = _Asking(_ScriptedLlama(list(range(200, 260))), [], stop_loops=True)
    out = asking.create_completion(prompt=loop, max_tokens=60)
    assert out["finish_reason"] == "length" and len(out["tokens"]) == 60 and not asking.looped


def test_a_continued_reply_is_judged_with_its_earlier_part():
    """A loop that began before the cut is caught within the new tokens, which alone would be too few."""
    line = list(range(10, 19))  # 9 tokens
    earlier = list(range(300, 320)) + line * 3  # cut off after 3 repeats: not a loop yet
    assert repetition_loop(earlier) == 0
    scripted = _ScriptedLlama(line * 10)
    asking = _Asking(scripted, earlier, stop_loops=True)
    out = asking.create_completion(prompt=[1, 2, 3], max_tokens=len(earlier) + 90)
    assert asking.looped and out["finish_reason"] == "stop"
    assert len(out["tokens"]) < LOOP_MIN_TOKENS  # a detector blind to the earlier part would need more
    assert repetition_loop(earlier + out["tokens"]) == len(line)


def test_stop_loops_off_adds_no_criterion():
    asking = _Asking(_ScriptedLlama([5] * 100), [], stop_loops=False)
    out = asking.create_completion(prompt=[1], max_tokens=100)
    assert out["finish_reason"] == "length" and len(out["tokens"]) == 100 and not asking.looped


GREEDY = dict(temperature=0.0, json_schema=None, stop=None, seed=None, timeout_s=120)


@pytest.mark.timeout(300)
def test_the_real_model_stops_a_loop_and_counts_its_tokens(provider):
    p, model = provider
    budget = 160
    looped = p.call(LOOPING, model=model, max_tokens=budget, **GREEDY)
    assert looped.finish_reason == "repetition"
    assert 0 < looped.output_tokens <= budget // 2  # stopped well before the budget, every token counted
    tokens = _llm(provider).tokenize(looped.text.encode("utf-8"), add_bos=False, special=False)
    assert repetition_loop(tokens)  # what it stopped on is a loop
    p.stop_loops = False
    try:
        free = p.call(LOOPING, model=model, max_tokens=budget, **GREEDY)
    finally:
        p.stop_loops = True
    assert free.finish_reason == "length" and free.output_tokens == budget  # left alone, it runs to the end
    assert free.text.startswith(looped.text)  # the same reply, stopped early


@pytest.mark.timeout(300)
def test_a_continuation_catches_a_loop_that_began_before_the_cut(provider):
    p, model = provider
    cut = p.call(LOOPING, model=model, max_tokens=LOOP_MIN_TOKENS, **GREEDY)
    assert cut.finish_reason == "length"
    continued = p.call(LOOPING, model=model, max_tokens=4 * LOOP_MIN_TOKENS, **GREEDY)
    assert continued.finish_reason == "repetition" and continued.text.startswith(cut.text)
    assert continued.output_tokens < LOOP_MIN_TOKENS  # the earlier part's repeats counted towards the loop
    whole = p.call(LOOPING, model=model, max_tokens=4 * LOOP_MIN_TOKENS, **GREEDY)  # asked in one go
    assert whole.finish_reason == "repetition" and whole.text == continued.text
    assert whole.output_tokens == cut.output_tokens + continued.output_tokens


@pytest.mark.timeout(300)
def test_the_client_fails_a_loop_at_once_and_caches_nothing(provider, tmp_path):
    from distillery_assets.llm.cache import ResponseCache
    from distillery_assets.llm.client import LLMClient

    p, model = provider
    client = LLMClient(p, cache_dir=tmp_path / "cache", length_retries=3, length_growth=2.0)
    request = LLMRequest(messages=LOOPING, temperature=0.0, max_tokens=160, tag="loop")
    result = client.complete(request)
    assert not result.ok and result.error_kind == "repetition" and result.finish_reason == "repetition"
    assert "finish_reason=repetition" in result.error
    assert result.attempts == 1  # no larger budget asked for
    assert 0 < result.usage.output_tokens <= 80
    assert ResponseCache(tmp_path / "cache").get(request.key(p.name, model)) is None
    again = client.complete(request)  # not served from the cache: asked (and stopped) again
    assert not again.cached and again.attempts == 1 and again.error_kind == "repetition"


def test_the_setting_reaches_the_provider(tmp_path):
    from distillery_assets.llm.settings import LLMSettings, build_provider

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 28)
    assert LLMSettings.from_env({}).stop_loops is True
    off = LLMSettings.from_env({"DISTILLERY_LLM_STOP_LOOPS": "0", "DISTILLERY_LLM_GGUF": str(gguf)})
    assert off.stop_loops is False and build_provider(off).stop_loops is False
    assert build_provider(LLMSettings(gguf=str(gguf))).stop_loops is True


def test_repetition_is_a_finish_reason_the_client_names():
    from distillery_assets.llm.client import UNFINISHED
    from distillery_assets.llm.providers.base import finish_reason

    assert finish_reason(local.REPETITION) == "repetition" and "repetition" in UNFINISHED
