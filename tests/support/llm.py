"""The real LLM client for tests: ``LLMClient`` over the project's ``ScriptedProvider`` (no HTTP, no model), and
an ``llm`` resource that hands such clients to assets. Code under test runs through the client's own cache,
retries, JSON checks, re-asks and usage rows, never through a stand-in of the client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from distillery_assets.llm import LLMClient, LLMRequest, LLMResult
from distillery_assets.llm.progress import Progress
from distillery_assets.llm.providers.scripted import ScriptedProvider


def scripted_client(reply: Callable[..., Any] | None = None, *, steps: list[Any] | None = None,
                    model: str = "scripted-1", batches: list | None = None, rows: list | None = None,
                    cache_dir=None, **options: Any) -> LLMClient:
    """``LLMClient(ScriptedProvider(steps, default=reply, model=model))`` with no cache unless ``cache_dir``.
    ``reply(messages, **settings)`` answers as ScriptedProvider's ``default`` does (text, a ProviderReply, or an
    exception to raise). ``batches`` (a list) gets ``(label, size)`` of every batch when it finishes, ``rows`` (a
    list) every usage row; ``options`` go to ``LLMClient``. The provider is ``client.provider``."""

    def progress(p: Progress) -> None:
        if p.done == p.total:
            batches.append((p.label, p.total))

    return LLMClient(ScriptedProvider(steps, default=reply, model=model), cache_dir=cache_dir,
                     progress=progress if batches is not None else None,
                     usage_sink=rows.extend if rows is not None else None, **options)


def answers(client: LLMClient, requests: Sequence[LLMRequest], label: str | None = None, **options: Any
            ) -> list[LLMResult]:
    """Every request's result in input order, through ``client.each`` (the way the task runner asks)."""
    results: list[LLMResult | None] = [None] * len(requests)
    client.each(requests, results.__setitem__, label, **options)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def scripted_llm(reply: Callable[..., Any] | None = None, **options: Any):
    """The ``llm`` resource for ``dg.materialize``: an ``LLMResource`` whose ``get_client`` is a new
    ``scripted_client(reply, **options)`` logging to the step's log (closed after the step, as the real
    resource's clients are)."""
    from resources.llm import LLMResource  # Dagster: imported only by the tests that materialize assets

    class ScriptedLLM(LLMResource):
        def get_client(self, context: Any | None = None, **overrides: Any) -> LLMClient:
            # a per-asset model override becomes the scripted provider's model (the others mean nothing here)
            model = {"model": overrides["model"]} if overrides.get("model") else {}
            client = scripted_client(reply, logger=getattr(context, "log", None), **{**options, **model})
            self._clients.append(client)
            return client

    return ScriptedLLM(cache=False)
