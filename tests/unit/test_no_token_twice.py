"""Issue 26, no wasted work: a reply cut off at max_tokens is continued, not generated again (the local
provider), and the tutor's system prompt is evaluated once at load, not at every first turn (GGUFChat).

These run the bundled SmolLM2-135M for a few dozen tokens; they count tokens (llama.cpp's own counters and
the usage the provider reports), never time."""

from __future__ import annotations

import pytest

from distillery_assets.llm.types import ChatMessage, LLMRequest

STORY = [ChatMessage(role="user", content="Write a long story about a lighthouse keeper and his cat.")]


def _provider():
    from distillery_assets.llm.providers.local import LocalProvider

    provider = LocalProvider(n_ctx=1024, n_threads=1)
    return provider, provider.model_id(None)


def _decoded(llm) -> int:
    import llama_cpp

    return llama_cpp.llama_perf_context(llm._ctx.ctx).n_eval


@pytest.mark.timeout(180)
def test_a_larger_budget_continues_the_cut_off_reply():
    provider, model = _provider()
    ask = dict(model=model, temperature=0.7, json_schema=None, stop=None, seed=None, timeout_s=60)
    first = provider.call(STORY, max_tokens=12, **ask)
    assert first.finish_reason == "length" and first.output_tokens == 12
    llm, _ = provider._model(provider._resolve_path(model))
    before = _decoded(llm)
    second = provider.call(STORY, max_tokens=24, **ask)
    assert second.text.startswith(first.text) and len(second.text) > len(first.text)
    assert second.output_tokens <= 12 and provider.continued_tokens == 12  # only the missing tokens
    assert _decoded(llm) - before <= 13  # llama.cpp decoded the new tokens only (one more for its last)


@pytest.mark.timeout(180)
def test_the_client_pays_each_token_of_a_length_retry_once(tmp_path):
    """Through LLMClient's length retry (budget 10, then 20): the tokens reported over both asks are at most
    the final budget; a fresh second ask would have cost 10 + 20."""
    from distillery_assets.llm.client import LLMClient

    provider, _ = _provider()
    client = LLMClient(provider, cache_dir=None, length_retries=1, length_growth=2.0)
    result = client.complete(LLMRequest(messages=STORY, temperature=0.7, max_tokens=10))
    assert result.attempts == 2  # the first ask was cut off (else this prompt does not test the retry)
    assert result.usage.output_tokens <= 20 and provider.continued_tokens == 10


def test_a_json_request_is_asked_afresh(tmp_path):
    """A grammar-constrained reply is never continued: its grammar state is not kept."""
    from distillery_assets.llm.providers import local

    calls = []

    class Model:
        def tokenize(self, *a, **k):
            raise AssertionError("a JSON reply must not be continued")

        def create_completion(self, **k):
            raise AssertionError("a JSON reply must not be continued")

        def create_chat_completion(self, **kwargs):
            calls.append(kwargs)
            return {"choices": [{"message": {"content": '{"a": '}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 4, "completion_tokens": len(calls) * 4}}

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 28)
    provider = local.LocalProvider(gguf, n_threads=1)
    provider._model = lambda path: (Model(), __import__("threading").Lock())
    ask = dict(model=provider.model_id(None), temperature=0.0, json_schema={"type": "object"}, stop=None,
               seed=1, timeout_s=5)
    provider.call(STORY, max_tokens=4, **ask)
    again = provider.call(STORY, max_tokens=8, **ask)
    assert len(calls) == 2 and calls[1]["max_tokens"] == 8 and again.text == '{"a": '


@pytest.mark.timeout(180)
def test_the_system_prompt_is_evaluated_once_at_load():
    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.poetry.gguf_chat import GRID, GGUFChat
    from distillery_assets.poetry.settings import ModelSettings, Sampling

    import llama_cpp

    system = "You are Wren, a poetry teacher. Quote exact words and give one concrete direction. Plain and warm."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "A poem about rain, please."}]
    sampling = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.1, max_tokens=4)
    evaluated = {}
    for primed in (False, True):
        chat = GGUFChat(smollm2_gguf_path(), ModelSettings(n_ctx=512, n_threads=1),
                        system=system if primed else None)
        try:
            before = llama_cpp.llama_perf_context(chat.llm._ctx.ctx).n_p_eval
            chat(messages, sampling)
            evaluated[primed] = llama_cpp.llama_perf_context(chat.llm._ctx.ctx).n_p_eval - before
            held, system_tokens = chat.primed_tokens, len(chat.llm.tokenize(system.encode(), add_bos=False))
        finally:
            chat.close()
    assert held > system_tokens > 10
    # the primed first turn does not evaluate the system prompt's tokens again, but for the grid's cell its held
    # prefix ends in (GGUFChat evaluates prompts in whole cells from a cell's start, gguf_chat.GRID)
    assert evaluated[True] <= evaluated[False] - system_tokens + GRID - 1


@pytest.mark.timeout(180)
def test_gguf_scores_match_a_float64_reference_and_skip_ignored_labels():
    """The vectorised float32 scoring gives the NLL of a float64 softmax over every row, on the label tokens
    only (an IGNORE label is not scored), on the bundled model."""
    import math

    import numpy as np
    from llama_cpp import Llama

    from distillery_assets.embedded import smollm2_gguf_path
    from distillery_assets.training.chat_data import IGNORE, Example
    from distillery_assets.training.perplexity import gguf_scores

    path = smollm2_gguf_path()
    llm = Llama(model_path=str(path), n_ctx=128, n_batch=128, n_ubatch=128, logits_all=True, n_threads=1,
                verbose=False)
    try:
        ids = llm.tokenize(b"The lighthouse keeper climbed the stairs at dusk and lit the lamp for the boats.",
                           add_bos=False)
        labels = [IGNORE] * 5 + ids[5:]  # the first tokens are a prompt, not scored
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
    nll = count = 0
    for t in range(len(ids) - 1):
        if labels[t + 1] != IGNORE:
            row = logits[t]
            nll += row.max() + math.log(np.exp(row - row.max()).sum()) - row[labels[t + 1]]
            count += 1
    score = gguf_scores(path, [[Example(input_ids=ids, labels=labels, source="t#1")]], threads=1)[0]
    assert score.tokens == count == len(ids) - 5
    assert score.nll == pytest.approx(nll, rel=1e-6)


@pytest.mark.timeout(180)
def test_an_unseeded_request_gets_the_same_sample_whatever_was_asked_before():
    """llama-cpp-python chains an unseeded call's seed from the previous call; the provider seeds each request
    from what it asks, so the reply depends on the request only (not on the step order of a run). Fresh
    providers share the process's loaded model, as two steps of an in-process run do."""
    from distillery_assets.llm.providers.local import request_seed

    ask = dict(temperature=1.0, json_schema=None, stop=None, seed=None, timeout_s=60, max_tokens=16)
    haiku = [ChatMessage(role="user", content="Write a haiku about rain on a tin roof.")]
    provider, model = _provider()
    alone = provider.call(haiku, model=model, **ask).text
    provider.call(STORY, model=model, **ask)  # another request in between moves llama-cpp-python's seed chain
    provider.call(STORY, model=model, **{**ask, "temperature": 0.9})
    again = provider.call(haiku, model=model, **ask).text
    assert again == alone
    # the derivation: the request, not the budget; a different request or an explicit seed changes it
    msgs = [{"role": m.role, "content": m.content} for m in haiku]
    assert request_seed(model, msgs, 1.0, None, None) == request_seed(model, msgs, 1.0, [], None)
    assert request_seed(model, msgs, 1.0, None, None) != request_seed(model, msgs, 0.9, None, None)
    seeded = [provider.call(haiku, model=model, **{**ask, "seed": s}).text for s in (1, 2, 3)]
    assert len({alone, *seeded}) > 1  # at temperature 1 the seed matters, so the equality above can fail
