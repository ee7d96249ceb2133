"""Missing ``.corpus`` files turned into LLM requests, answered concurrently, written atomically.

The client is anything with ``complete_batch(requests, label=...) -> list[LLMResult]`` (order preserved,
one result per request, never raising for one bad item): in the platform that is the LLM resource's client,
which owns concurrency, rate limits, retries and the response cache. Requests go out in chunks so a long run
writes its files as it goes; a run killed mid-way leaves complete files only (atomic writes), and the
answers it had already received stay in the LLM cache, so the next run pays for none of them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from distillery_assets.corpus.prompts_file import CorpusTask
from distillery_assets.corpus.quality import word_count
from distillery_assets.io import atomic_write_text
from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult

SYSTEM_PROMPT = (
    "You write passages for a text corpus that will teach a language model to write well. "
    "Answer with the passage alone, as plain prose paragraphs: no preface or closing remarks, "
    "no notes about the request, no markdown, and a title only when the piece would naturally carry one."
)
TEMPERATURE = 0.8
MAX_TOKENS = 4096
DEFAULT_CHUNK = 256
WRITER_THREADS = 8


class BatchClient(Protocol):
    def complete_batch(self, requests: Sequence[LLMRequest], label: str) -> list[LLMResult]: ...


def build_request(task: CorpusTask, *, model: str | None, tag: str, max_tokens: int = MAX_TOKENS) -> LLMRequest:
    return LLMRequest(
        messages=[ChatMessage(role="system", content=SYSTEM_PROMPT), ChatMessage(role="user", content=task.prompt)],
        temperature=TEMPERATURE,
        max_tokens=max_tokens,
        model=model,
        tag=tag,
    )


@dataclass(frozen=True)
class FileOutcome:
    task: CorpusTask
    status: str  # "generated" | "failed" | "skipped"
    reason: str | None = None
    words: int = 0
    cached: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    truncated: bool = False
    model: str | None = None


@dataclass
class GenerationReport:
    outcomes: list[FileOutcome] = field(default_factory=list)

    def with_status(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def generated(self) -> list[FileOutcome]:
        return self.with_status("generated")

    @property
    def failed(self) -> list[FileOutcome]:
        return self.with_status("failed")

    def totals(self) -> dict:
        costs = [o.cost_usd for o in self.outcomes if not o.cached]
        return {
            "requests": len(self.outcomes),
            "cache_hits": sum(o.cached for o in self.outcomes),
            "input_tokens": sum(o.input_tokens for o in self.outcomes),
            "output_tokens": sum(o.output_tokens for o in self.outcomes),
            "cost_usd": round(sum(c for c in costs if c), 6),
            "cost_unknown_for": sum(c is None for c in costs),
        }


def _outcome(task: CorpusTask, result: LLMResult) -> FileOutcome:
    usage = dict(
        cached=result.cached,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        cost_usd=0.0 if result.cached else result.usage.cost_usd,
        model=result.model,
    )
    if not result.ok:
        return FileOutcome(task, "failed", reason=result.error or "unknown error", **usage)
    text = (result.text or "").strip()
    if not text:
        return FileOutcome(task, "failed", reason="the model returned no text", **usage)
    if task.path.exists():  # written by a concurrent run since we planned: keep theirs
        return FileOutcome(task, "skipped", reason="appeared during the run", **usage)
    atomic_write_text(task.path, text + "\n")
    return FileOutcome(
        task, "generated", words=word_count(text), truncated=result.finish_reason == "length", **usage
    )


def generate_missing(
    tasks: Sequence[CorpusTask],
    client: BatchClient | None,
    *,
    model: str | None = None,
    tag: str = "corpus",
    label: str = "corpus",
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int, int], None] | None = None,
    writers: int = WRITER_THREADS,
    max_tokens: int = MAX_TOKENS,
) -> GenerationReport:
    """Ask the client for every task's text and write each answer to its ``.corpus`` file (with no tasks the
    client is not needed and may be None).

    Chunks are pipelined: while one chunk's answers are written (in a small thread pool, since each atomic
    write waits on an fsync), the next chunk's requests are already in flight.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    chunks = [list(tasks[start : start + chunk_size]) for start in range(0, len(tasks), chunk_size)]
    report = GenerationReport()
    if not chunks:
        return report
    if client is None:
        raise ValueError(f"{len(tasks)} documents to generate but no LLM client given")

    def ask(chunk: list[CorpusTask]) -> list[LLMResult]:
        results = client.complete_batch(
            [build_request(t, model=model, tag=tag, max_tokens=max_tokens) for t in chunk], label=label
        )
        if len(results) != len(chunk):
            raise RuntimeError(f"LLM client returned {len(results)} results for {len(chunk)} requests")
        return results

    done = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpus-ask") as asker, ThreadPoolExecutor(
        max_workers=max(1, writers), thread_name_prefix="corpus-write"
    ) as writer:
        in_flight = asker.submit(ask, chunks[0])
        for index, chunk in enumerate(chunks):
            results = in_flight.result()
            if index + 1 < len(chunks):
                in_flight = asker.submit(ask, chunks[index + 1])
            report.outcomes.extend(writer.map(_outcome, chunk, results))
            done += len(chunk)
            if on_chunk:
                on_chunk(done, len(tasks))
    return report
