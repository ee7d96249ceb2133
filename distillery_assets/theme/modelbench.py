"""Speed and quality benchmark of the models an OpenAI-compatible endpoint serves (LM Studio, llama.cpp
server, vLLM, OpenAI...), for choosing the ChatML generator.

Per model: one streamed chat completion of the generator's real prompt, timing the first content token
(TTFT) and the whole response; tokens per second over the generation phase; projected hours per 1,000
responses; then an evaluator model rates the response 1-5. A rating that cannot be parsed is reported as
missing with the reason, never replaced by a made-up score. API keys are read from the environment at call
time from the variable *named* in the settings. Everything goes through the ``openai`` SDK (its retries off:
one attempt per model, as measured); the stream asks for the usage chunk (``stream_options.include_usage``).

CLI: ``python benchmarks/theme_models.py --base-url http://localhost:1234/v1 [--models a,b] [--out f.json]``
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import openai

from distillery_assets.markdown import clip, md_table

RATING_SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "number"}, "reasoning": {"type": "string"}},
    "required": ["rating", "reasoning"],
}

EVALUATOR_PROMPT = """\
Rate a candidate model's output for a training-data task on a scale from 1 (useless) to 5 (excellent).
The task asked for ONE JSON object {{"user": question, "assistant": answer}} where the answer speaks as a
calm, strategic, community-minded thinking machine on a Mars settlement, uses only words available before
July 1969, draws on the given passage, and is plain prose of two to four sentences.
Judge: valid JSON with both keys; a natural, self-contained question; the answer's character and period
vocabulary; its use of the passage; usefulness as training data.

TASK PROMPT (abridged):
{task}

CANDIDATE OUTPUT:
{output}

Reply with JSON only: {{"rating": <number 1-5>, "reasoning": "<one or two sentences>"}}"""


@dataclass
class BenchSettings:
    base_url: str = "http://localhost:1234/v1"
    api_key_env: str | None = None  # NAME of the env var holding the key (LM Studio needs none)
    models: list[str] | None = None  # None: every model GET /models lists
    models_filter: list[str] | None = None  # keep models whose id contains any of these
    evaluator_model: str | None = None  # None: no rating
    max_tokens: int = 512
    temperature: float = 0.8
    timeout_s: float = 600.0


@dataclass
class ModelRun:
    model: str
    ok: bool
    error: str | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    output_tokens: int | None = None
    tokens_source: str | None = None
    tokens_per_s: float | None = None
    hours_per_1000: float | None = None
    response_chars: int | None = None
    response: str | None = None
    rating: float | None = None
    rating_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _api_key(settings: BenchSettings) -> str | None:
    """The key from the variable named in the settings, read now (never stored in the settings)."""
    return os.environ.get(settings.api_key_env) if settings.api_key_env else None


def make_client(settings: BenchSettings) -> openai.OpenAI:
    """An SDK client for the endpoint (no key: a placeholder, as local servers accept any; no SDK retries)."""
    return openai.OpenAI(api_key=_api_key(settings) or "not-needed", base_url=settings.base_url,
                         timeout=settings.timeout_s, max_retries=0)


def _error(exc: Exception) -> str:
    """``Type: message``, with the underlying cause (``httpx.ConnectError`` under the SDK's connection error)."""
    cause = exc.__cause__
    return f"{type(exc).__name__}: {exc}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")


def list_models(client: openai.OpenAI, settings: BenchSettings) -> list[str]:
    ids = [m.id for m in client.models.list().data]
    if settings.models_filter:
        ids = [i for i in ids if any(f.lower() in i.lower() for f in settings.models_filter)]
    return ids


def stream_completion(client: openai.OpenAI, settings: BenchSettings, model: str,
                      messages: list[dict[str, str]], max_tokens: int, temperature: float) -> ModelRun:
    pieces: list[str] = []
    chunks = 0
    usage_tokens = None
    first = None
    start = time.perf_counter()
    try:
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                temperature=temperature, stream=True,
                                                stream_options={"include_usage": True})
    except openai.APIStatusError as exc:
        return ModelRun(model, False, f"HTTP {exc.status_code}: {exc.response.text[:200]}")
    with stream:
        for chunk in stream:
            if chunk.usage is not None and chunk.usage.completion_tokens is not None:
                usage_tokens = int(chunk.usage.completion_tokens)
            for choice in chunk.choices or []:
                content = choice.delta.content if choice.delta is not None else None
                if content:
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(content)
                    chunks += 1
    end = time.perf_counter()
    if first is None:
        return ModelRun(model, False, "stream ended without any content")
    tokens = usage_tokens if usage_tokens is not None else chunks
    generation = end - first
    text = "".join(pieces)
    return ModelRun(
        model, True, ttft_s=round(first - start, 4), total_s=round(end - start, 4), output_tokens=tokens,
        tokens_source="usage" if usage_tokens is not None else "stream_chunks",
        tokens_per_s=round(tokens / generation, 2) if generation > 0 else None,
        hours_per_1000=round((end - start) * 1000 / 3600, 5), response_chars=len(text), response=text,
    )


def parse_rating(text: str) -> tuple[float | None, str]:
    start = text.find("{")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else (None, 0)
    except ValueError as exc:
        return None, f"evaluator reply is not JSON ({exc.msg})"
    if not isinstance(obj, dict) or not isinstance(obj.get("rating"), (int, float)):
        return None, "evaluator reply has no numeric 'rating'"
    rating = float(obj["rating"])
    if not 1.0 <= rating <= 5.0:
        return None, f"evaluator rating {rating} outside 1-5"
    return rating, str(obj.get("reasoning", ""))[:300]


def rate(client: openai.OpenAI, settings: BenchSettings, task: str, output: str) -> tuple[float | None, str]:
    request: dict[str, Any] = {
        "model": settings.evaluator_model, "temperature": 0.1, "max_tokens": 200,
        "messages": [{"role": "user", "content": EVALUATOR_PROMPT.format(task=task[:1500], output=output)}]}
    try:
        try:
            response = client.chat.completions.create(**request, response_format={
                "type": "json_schema", "json_schema": {"name": "rating", "schema": RATING_SCHEMA}})
        except openai.APIStatusError as exc:
            if "response_format" not in exc.response.text:
                raise
            # servers without json_schema support (llama.cpp's server answers 500 to it): plain JSON mode
            response = client.chat.completions.create(**request, response_format={"type": "json_object"})
    except openai.APIStatusError as exc:
        return None, f"evaluator HTTP {exc.status_code}: {exc.response.text[:160]}"
    content = response.choices[0].message.content or ""
    return parse_rating(content)


def run_benchmark(settings: BenchSettings, messages: list[dict[str, str]],
                  client: openai.OpenAI | None = None) -> dict[str, Any]:
    own = client is None
    client = client or make_client(settings)
    try:
        models = settings.models or list_models(client, settings)
        runs: list[ModelRun] = []
        for model in models:
            try:
                run = stream_completion(client, settings, model, messages, settings.max_tokens, settings.temperature)
            except (openai.APIError, ValueError) as exc:
                run = ModelRun(model, False, _error(exc))
            if run.ok and settings.evaluator_model:
                try:
                    run.rating, run.rating_reason = rate(client, settings, messages[-1]["content"], run.response or "")
                except (openai.APIError, ValueError, KeyError, IndexError) as exc:
                    run.rating, run.rating_reason = None, f"evaluator failed: {exc}"
            elif run.ok:
                run.rating_reason = "no evaluator model configured"
            runs.append(run)
    finally:
        if own:
            client.close()
    ranked = sorted(runs, key=lambda r: (not r.ok, -(r.tokens_per_s or 0.0)))
    return {
        "base_url": settings.base_url,
        "evaluator_model": settings.evaluator_model,
        "max_tokens": settings.max_tokens,
        "ranked": [{"rank": i + 1, **asdict(r)} for i, r in enumerate(ranked)],
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The ranking as a markdown table (through the shared :func:`distillery_assets.markdown.md_table`)."""
    rows = []
    for r in result["ranked"]:
        rating = f"{r['rating']:.1f}/5" if r.get("rating") is not None else "n/a"
        note = clip(r.get("error") or r.get("rating_reason") or "", 80)
        rows.append([r["rank"], r["model"], r["tokens_per_s"] or "-", r["ttft_s"] or "-", r["total_s"] or "-",
                     r["hours_per_1000"] or "-", rating, note])
    return md_table(rows, ["Rank", "Model", "Tok/s", "TTFT s", "Time s", "h / 1000 resp", "Rating", "Note"],
                    align="rlrrrrrl")
