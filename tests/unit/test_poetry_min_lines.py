"""min_lines: end-of-turn held back until the reply has that many lines (poetry.gguf_chat)."""

import numpy as np
import pytest

from distillery_assets.poetry.gguf_chat import HoldEndOfTurn, count_lines


class Detok:
    """Token id -> text, as llama-cpp-python's detokenize (ids to bytes)."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, ids):
        return "".join(self.vocab[i] for i in ids).encode("utf-8")


VOCAB = {0: "<prompt>", 1: "snow", 2: "\n", 3: " on", 4: "<end>"}


def test_end_of_turn_is_masked_until_the_reply_has_min_lines_and_free_after():
    hold = HoldEndOfTurn(Detok(VOCAB), [4], min_lines=2)
    prompt = [0, 0, 0]
    first = hold(np.array(prompt), np.zeros(5, dtype=np.float32))
    assert first[4] == -np.inf and first[:4].tolist() == [0, 0, 0, 0]  # the prompt's own text does not count
    one_line = hold(np.array(prompt + [1, 3, 2]), np.zeros(5, dtype=np.float32))
    assert one_line[4] == -np.inf
    blank_lines = hold(np.array(prompt + [1, 2, 2, 2]), np.zeros(5, dtype=np.float32))
    assert blank_lines[4] == -np.inf  # empty lines are not lines
    two = hold(np.array(prompt + [1, 2, 1]), np.zeros(5, dtype=np.float32))
    assert two[4] == 0.0


def test_count_lines_counts_non_empty_lines():
    assert count_lines("a\n\n b \n") == 2 and count_lines("") == 0


@pytest.mark.timeout(120)
def test_the_bundled_model_writes_at_least_min_lines_when_held():
    """The real 135M model through GGUFChat: with min_lines 4 every reply that stopped on its own has 4 lines."""
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.settings import ModelSettings, Sampling

    chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1))  # 2 spin under load (issue 26)
    try:
        messages = [{"role": "user", "content": "Write a haiku about rain."}]
        free = chat(messages, Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.1, max_tokens=120))
        held = chat(messages, Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.1, max_tokens=120, min_lines=4))
    finally:
        chat.close()
    assert count_lines(free.text) < 4  # otherwise this prompt does not test the hold
    assert held.finish_reason == "stop" and count_lines(held.text) >= 4
