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


def _session(ahead: bool):
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
    educator = GGUFChat(smollm2_gguf_path(), settings, system=prompts.educator_system)
    poet = GGUFChat(smollm2_gguf_path(), settings, system=prompts.poet_system)

    def counted(chat, who):
        def call(messages, sampling, on_text=None):
            prompt = prompt_tokens(chat.llm, messages)
            held = common_prefix(chat.llm.input_ids[:chat.llm.n_tokens], prompt)
            new_tokens.append((who, len(prompt) - held))
            return chat(messages, sampling, on_text=on_text)

        if ahead:
            call.streams_text, call.read_ahead = True, chat.read_ahead
        return call

    try:
        session = run_session("Write a poem about winter light", educator=counted(educator, "educator"),
                              poet=counted(poet, "poet"), prompts=prompts, sampling=SAMPLING, max_revisions=1)
        assert (educator.llm.n_threads, educator.llm.n_threads_batch) == (1, 1)  # a read-ahead gives them back
    finally:
        educator.close()
        poet.close()
    return session, new_tokens


@pytest.mark.timeout(300)
def test_reading_ahead_keeps_every_reply_and_leaves_little_prompt_to_evaluate():
    plain, plain_new = _session(ahead=False)
    ahead, ahead_new = _session(ahead=True)
    read = [s.get("next_read_ahead_tokens") for s in ahead["metadata"]["steps"]]
    for s in (*plain["metadata"]["steps"], *ahead["metadata"]["steps"]):
        s.pop("next_read_ahead_tokens", None)
    # the same turns, prompts and replies (llama.cpp's logits do not depend on how the prompt was batched)
    assert ahead == plain
    steps = [s["step"] for s in plain["metadata"]["steps"]]
    assert steps == ["brief", "draft", "critique 1", "revision brief 1", "revision 1", "final note"]
    # brief -> draft, draft -> critique, revision brief -> revision, revision -> final note were read ahead;
    # the critique's and the revision brief's successors are the educator itself (one context), not read ahead
    assert [bool(n) for n in read] == [True, True, False, True, True, False]
    for i in (1, 2, 4, 5):  # the turns that were read: only their prompt's tail is left (a few template tokens)
        assert ahead_new[i][1] <= 24 < plain_new[i][1], (steps[i], ahead_new[i], plain_new[i])
    for i in (0, 3):  # the others evaluate what they always did
        assert ahead_new[i] == plain_new[i]


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
