"""Issue 26, the tutor's first token: while one model writes, the other reads ahead the turn that will carry
that text (``GGUFChat.read_ahead``, ``session.run_session``). Real sessions on the bundled SmolLM2 (loaded
twice, as educator and poet), small budgets; they count tokens, never time."""

from __future__ import annotations

import time

import pytest

from distillery_assets.poetry.settings import Sampling, StepSampling

SHORT = Sampling(temperature=0.7, top_p=0.95, repeat_penalty=1.1, max_tokens=24)
SAMPLING = StepSampling(brief=SHORT, critique=SHORT, revision_brief=SHORT, final_note=SHORT, draft=SHORT,
                        revision=SHORT)


def _session(ahead: bool, educator_contexts: int = 1, approve: bool = False, long_turns: int = 24):
    """One session with one critique round; each turn records the prompt tokens its own completion had to
    evaluate (its prompt less what the model's context held when it was asked)."""
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GGUFChat, common_prefix, prompt_tokens
    from distillery_assets.poetry.session import SessionPrompts, run_session
    from distillery_assets.poetry.settings import ModelSettings

    prompts = SessionPrompts(
        educator_system="You are Wren, a poetry teacher. Quote exact words and give one concrete direction.",
        poet_system="You are a poet. Answer with the poem only.",
        brief='A student asks: "{request}"\nWrite a short brief for a poet.',
        critique="The brief was:\n{brief}\n{history}The draft:\n---\n{draft}\n---\nCritique it in one sentence.",
        revision_brief="The brief was:\n{brief}\nThe draft:\n---\n{draft}\n---\nYour critique:\n{critique}\nBrief "
                       "the poet on one change.",
        final_note="The final poem:\n---\n{draft}\n---\nOne sentence to the student about it.")
    new_tokens: list[tuple[str, int]] = []
    settings = ModelSettings(n_ctx=1024, n_threads=1)
    educator = GGUFChat(smollm2_gguf_path(), settings, system=prompts.educator_system, contexts=educator_contexts)
    poet = GGUFChat(smollm2_gguf_path(), settings, system=prompts.poet_system)

    def counted(chat, who):
        def call(messages, sampling, on_text=None):
            chat.select(messages)  # the context the turn will be asked in
            prompt = prompt_tokens(chat.llm, messages)
            held = common_prefix(chat.llm.input_ids[:chat.llm.n_tokens], prompt)
            new_tokens.append((who, len(prompt) - held))
            return chat(messages, sampling, on_text=on_text)

        if ahead:
            call.streams_text, call.read_ahead = True, chat.read_ahead
        return call

    try:
        session = run_session("Write a poem about winter light", educator=counted(educator, "educator"),
                              poet=counted(poet, "poet"), prompts=prompts,
                              sampling=SAMPLING.model_copy(update=dict.fromkeys(
                                  ("draft", "critique"), SHORT.model_copy(update={"max_tokens": long_turns}))),
                              max_revisions=1,
                              approval_phrases=[" "] if approve else ())  # " ": any critique of words approves
        for llm in educator.contexts:  # a read-ahead gives its context's threads back
            assert (llm.n_threads, llm.n_threads_batch) == (1, 1)
    finally:
        educator.close()
        poet.close()
    return session, new_tokens


@pytest.mark.timeout(300)
@pytest.mark.parametrize("educator_contexts", [1, 3])
def test_reading_ahead_keeps_every_reply_and_leaves_little_prompt_to_evaluate(educator_contexts):
    plain, plain_new = _session(ahead=False)
    ahead, ahead_new = _session(ahead=True, educator_contexts=educator_contexts)
    read = [s.get("next_read_ahead_tokens") for s in ahead["metadata"]["steps"]]
    for s in (*plain["metadata"]["steps"], *ahead["metadata"]["steps"]):
        s.pop("next_read_ahead_tokens", None)
    # the same turns, prompts and replies (llama.cpp's logits do not depend on how the prompt was batched)
    assert ahead == plain
    steps = [s["step"] for s in plain["metadata"]["steps"]]
    assert steps == ["brief", "draft", "critique 1", "revision brief 1", "revision 1", "final note"]
    # each turn's text is read into the turn that carries it: brief -> draft, draft -> critique, critique ->
    # revision brief (the educator after itself: only with a second context; a third reads the final note that
    # would follow an approval), revision brief -> revision, revision -> final note; the final note is last
    two = educator_contexts > 1
    assert [bool(n) for n in read] == [True, True, two, True, True, False]
    # how far a read got when its writer stopped depends on the two threads' timing (a short reply can end
    # before the reader caught up: the turn then evaluates the rest itself), so per turn only "never more than
    # without it" holds (up to the last tokens a read leaves out); test_a_read_... checks the mechanism exactly
    assert ahead_new[0] == plain_new[0]  # the first turn has nothing before it to read from
    for (who, n), (_, m) in zip(ahead_new, plain_new):
        assert n <= m + 2
    assert sum(n for _, n in ahead_new) < sum(n for _, n in plain_new)


@pytest.mark.timeout(300)
def test_the_final_note_after_an_approving_critique_was_read_during_the_draft_and_the_critique():
    """The turns after an approving critique: the replies are the same with reading ahead, the draft is read
    while the poet writes it and the critique while the educator writes it, and the final note that comes
    instead of a revision brief finds its prompt read (in the educator's third context). That the draft goes
    into the note's context too is pinned by ``test_poetry_session.py``; the mechanism (a fed and waited read
    leaves only the template's tail) by ``test_a_read_leaves_only_the_template_tail``."""
    # a draft and a critique long enough for the note's reader, last in line during both, to get turns (a turn's
    # readers are closed together when it ends, so 24-token turns could end before the last one read)
    plain, plain_new = _session(ahead=False, approve=True, long_turns=128)
    ahead, ahead_new = _session(ahead=True, educator_contexts=3, approve=True, long_turns=128)
    read = [s.get("next_read_ahead_tokens") for s in ahead["metadata"]["steps"]]
    for s in (*plain["metadata"]["steps"], *ahead["metadata"]["steps"]):
        s.pop("next_read_ahead_tokens", None)
    assert ahead == plain
    assert [s["step"] for s in plain["metadata"]["steps"]] == ["brief", "draft", "critique 1", "final note"]
    assert [bool(n) for n in read] == [True, True, True, False]  # the draft: critique, revision brief and note
    for (_, n), (_, m) in zip(ahead_new, plain_new):
        assert n <= m + 2
    # the note's turn: the draft it carries was read (timing decides only how much of the rest)
    assert ahead_new[-1][1] < plain_new[-1][1]


@pytest.mark.timeout(120)
def test_a_wrong_guess_costs_time_only():
    """Text read ahead that the turn does not carry is evaluated again where it differs: the reply is what a
    context that never read ahead gives."""
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.settings import ModelSettings

    system = "You are a poet."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "A poem about a heron at dawn."}]
    replies = []
    for guess in (None, "A poem about a lighthouse keeper and his cat, who never sleeps at night."):
        chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1), system=system)
        try:
            if guess:
                reader = chat.read_ahead(system, lambda text: text)
                reader.feed(guess)
                deadline = time.monotonic() + 60
                while reader.evaluated == 0 and reader.error is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert reader.close() > 10 and reader.error is None
            replies.append(chat(messages, SHORT).text)
        finally:
            chat.close()
    assert replies[0] == replies[1] and replies[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("same_model", [False, True])
def test_a_read_leaves_only_the_template_tail(same_model):
    """Text read ahead (fed, then waited for) is held by the context the next turn is asked in, so that turn
    evaluates only its template's tail. Another model's text goes to any free context; a model's own text
    (``beside``: it writes it) to its second context, never the one it writes in."""
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GRID, GGUFChat, common_prefix, prompt_tokens
    from distillery_assets.poetry.settings import ModelSettings

    system = "You are Wren, a poetry teacher."
    writing = [{"role": "system", "content": system}, {"role": "user", "content": "Critique: 'the moon is a coin'."}]
    critique = "The line leans on a worn image; find the coin's weight, its cold, the hand that spends it."
    chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1), system=system,
                    contexts=2 if same_model else 1)
    try:
        writer = chat.select(writing) if same_model else None
        reader = chat.read_ahead(system, lambda text: "Your critique:\n" + text.lstrip(),
                                 beside=writing if same_model else None)
        assert reader is not None and reader.llm is not writer
        assert chat.read_ahead(system, lambda t: t, beside=writing if same_model else None) is None  # all taken
        held_by_writer = writer.n_tokens if same_model else None
        reader.feed(critique)
        target = len(reader._stable(critique))
        target -= target % GRID  # a read takes whole cells of the grid
        deadline = time.monotonic() + 60
        while reader.llm.n_tokens < target and reader.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.close() > 0 and reader.error is None
        assert not same_model or writer.n_tokens == held_by_writer  # the writer's context was left alone
        following = [{"role": "system", "content": system},
                     {"role": "user", "content": f"Your critique:\n{critique}\nBrief the poet on one change."}]
        asked = chat.select(following)
        prompt = prompt_tokens(asked, following)
        # what is left: the template's tail, and on the grid the cell the read ended in (GRID - 1 at most)
        left = len(prompt) - common_prefix(asked.input_ids[:asked.n_tokens], prompt)
        assert asked is reader.llm and left <= 16 + GRID
    finally:
        chat.close()


class _Meter:
    """A CoreMeter stand-in: the rest of the machine keeps ``others`` cores busy."""

    def __init__(self, others: float):
        self.value = others

    def others(self) -> float:
        return self.value


@pytest.mark.timeout(120)
def test_no_read_ahead_without_a_free_core():
    """With the thread policy's spare cores, a read-ahead starts only when the rest of the machine leaves a core
    free: beside a busy process it would take the writer's core (measured: decode ~78 -> ~35 tokens/s)."""
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.settings import ModelSettings
    from distillery_assets.threads import SpareCores

    chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=256))
    try:
        meter, now = _Meter(1.0), [100.0]
        chat.spare = SpareCores(1, 2, meter=meter, interval=2.0, clock=lambda: now[0])
        now[0] += 5
        assert chat.read_ahead("system", lambda text: text) is None  # one core busy elsewhere: none
        meter.value, now[0] = 0.05, now[0] + 5
        reader = chat.read_ahead("system", lambda text: text)  # the other core idle again
        assert reader is not None
        reader.close()
        chat.spare = SpareCores(1, 1, fixed=True)
        assert chat.read_ahead("system", lambda text: text) is None  # a one-core machine never reads ahead
    finally:
        chat.close()


@pytest.mark.timeout(120)
def test_closing_a_turns_readers_starts_no_new_chunk():
    """A turn's read-aheads are closed together (``session.close_readers``): while the one evaluating is waited
    for, the others waiting their turn must not start a chunk of their own (closed one after the other, each
    next in line did, and a critique waited for three chunks)."""
    import threading

    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.session import close_readers
    from distillery_assets.poetry.settings import ModelSettings

    system = "You are Wren, a poetry teacher."
    text = " ".join(["The heron stands in the grey water at dawn and waits for the light to move."] * 6)
    chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1), system=system, contexts=3)
    readers = [chat.read_ahead(system, lambda t, i=i: f"Reader {i}:\n" + t.lstrip(), priority=i) for i in range(3)]
    assert all(r is not None for r in readers)
    lock, entered, release = threading.Lock(), threading.Event(), threading.Event()
    chunks: list[int] = []

    def held(llm, eval_):
        def evaluate(tokens):
            with lock:
                chunks.append(id(llm))
                first = len(chunks) == 1
            if first:  # the first chunk anyone starts is held until every reader has been told to stop
                entered.set()
                release.wait(30)
            return eval_(tokens)
        return evaluate

    for r in readers:
        r.llm.eval = held(r.llm, r.llm.eval)
    closing = None
    try:
        for r in readers:
            r.feed(text)
        assert entered.wait(60)
        closing = threading.Thread(target=close_readers, args=(readers,))
        closing.start()
        deadline = time.monotonic() + 10
        while not all(r._closing for r in readers) and time.monotonic() < deadline:
            time.sleep(0.01)
        told = [r._closing for r in readers]
        release.set()
        closing.join(60)
        assert told == [True, True, True]  # each told before the one evaluating was waited for
        assert len(chunks) == 1  # and nobody started another chunk after that
        assert all(r.error is None for r in readers)
    finally:
        release.set()
        if closing is not None:
            closing.join(60)
        for r in readers:
            del r.llm.eval
        chat.close()


def test_aligned_start():
    from distillery_assets.poetry.gguf_chat import aligned_start

    assert aligned_start(45, 10**6, 100, None) == 45  # a split-invariant model starts where the held prefix ends
    assert aligned_start(45, 10**6, 100, 32) == 32  # on a grid: at the start of that cell
    assert aligned_start(45, 32, 100, 32) == 32 and aligned_start(70, 32, 100, 32) == 32  # whole cells only
    assert aligned_start(100, 10**6, 100, 32) == 96  # never from the prompt's lone last token
    assert aligned_start(64, 64, 64, 32) == 32 and aligned_start(5, 64, 100, 32) == 0


@pytest.fixture(scope="module")
def k_quant(tmp_path_factory):
    """The bundled SmolLM2 requantized to Q4_K_M (the poet's export type), whose logits move with the batch split."""
    import ctypes

    import llama_cpp

    from distillery_assets.embedded import smollm2_gguf_path

    dst = tmp_path_factory.mktemp("kquant") / "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, True, 2
    assert llama_cpp.llama_model_quantize(str(smollm2_gguf_path()).encode(), str(dst).encode(),
                                          ctypes.byref(params)) == 0
    return dst


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["bundled", "k_quant"])
def test_a_reply_does_not_depend_on_what_the_context_held(model, k_quant):
    """llama.cpp's logits move with how a prompt was split into batches, so a turn asked in a context that held
    part of its prompt (a read-ahead that stopped anywhere, an earlier turn sharing a prefix) got other numbers,
    and other samples, than in a fresh one; the tutor's replies then hung on the read-ahead's timing. Prompts
    are evaluated on a grid of whole cells (``GGUFChat.grid``), and the first token's logits are the same bits
    whatever was held. The premise is checked on the K-quant (the poet's export type): without the grid they
    are not."""
    import numpy as np

    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GRID, GGUFChat, prompt_tokens
    from distillery_assets.poetry.settings import ModelSettings

    system = "You are a poet."
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Write about a heron standing in the grey water at dawn, waiting for "
                                            "the light to move across the reeds, and the cold, and the fish."}]
    one = Sampling(temperature=0.7, top_p=0.95, repeat_penalty=1.1, max_tokens=1)
    chat = GGUFChat(k_quant if model == "k_quant" else smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1),
                    system=system)
    try:
        assert chat.grid == GRID
        llm = chat.llm
        prompt = prompt_tokens(llm, messages)

        def first_logits(held: int | None) -> np.ndarray:
            llm.reset()
            chat.canonical.pop(id(llm), None)
            if held is not None:  # the context holds the prompt's first ``held`` tokens: whole cells as a
                cells = held - held % GRID  # read-ahead leaves them, then the rest as an earlier turn's tail
                llm.eval(prompt[:cells])
                chat.canonical[id(llm)] = cells
                llm.eval(prompt[cells:held])
            chat(messages, one)
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()

        fresh = first_logits(None)
        helds = [1, 5, 9, 17, 29, 33, 41, 50, len(prompt) - 3]
        assert all(np.array_equal(first_logits(k), fresh) for k in helds)
        if model == "k_quant":
            chat.grid = None  # the premise: started where the held prefix ends, some of them differ
            assert not all(np.array_equal(first_logits(k), fresh) for k in helds)
    finally:
        chat.close()
