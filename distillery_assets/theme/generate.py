"""Persona ChatML generation from keyword-filtered chunks: prompts, JSON re-ask, validation, checkpoints.

The LLM is reached through a ``complete(specs, label) -> results`` callable so this module needs no
Dagster and no particular client: the asset adapts it to ``LLMResource.get_client(...).complete_batch``,
tests pass a fake. A result needs ``ok``, ``text``, ``parsed``, ``error`` and ``usage`` (with
``input_tokens``/``output_tokens``) and may carry ``cached``.

Determinism (what makes kill-and-resume give the same examples as an uninterrupted run): persona, query
theme and request seed depend only on ``(seed, chunk_id, example index, attempt)``; chunks are processed
and journaled in input order; the duplicate-question index is rebuilt from the journal on resume.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.theme.config import Persona
from distillery_assets.theme.journal import ChunkJournal
from distillery_assets.theme.validate import ExampleValidator

EXCHANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user": {"type": "string", "minLength": 5},
        "assistant": {"type": "string", "minLength": 5},
    },
    "required": ["user", "assistant"],
    "additionalProperties": False,
}

GENERATOR_INSTRUCTIONS = """\
You write one training example for a language model that will play the character below.

CHARACTER
{persona}

TASK
Invent a question that a thoughtful settler might put to the character, then write the character's \
answer. The answer draws on ideas, images or events from the source passage, stays in character and runs \
two to four sentences (about 200 to 450 characters). The character knows nothing after July 1969, so use \
period words: "calculating machine" rather than "computer", "thinking machine" rather than "AI", \
"method of calculation" rather than "algorithm", "communications grid" rather than "network". Write plain \
prose: no lists, headings, bold text or speaker labels.

Reply with a single JSON object and nothing else: {{"user": "<the question>", "assistant": "<the answer>"}}"""

PASSAGE_MESSAGE = "SOURCE PASSAGE (from {title}):\n{passage}\n\nTOPIC OF THE QUESTION: {theme}"

REASK_MESSAGE = (
    "That reply could not be used: {error}. Answer again with only the JSON object "
    '{{"user": "...", "assistant": "..."}} and no other text.'
)


@dataclass(frozen=True)
class GenerationSettings:
    examples_per_chunk: int = 2
    temperature: float = 0.8
    max_tokens: int = 400
    max_passage_chars: int = 1500
    min_chunk_chars: int = 100
    max_reasks: int = 1
    seed: int = 42
    batch_chunks: int = 4
    model: str | None = None

    def fingerprint(self, *extra: str) -> str:
        """Identifies a generation setup; the journal lives under it so a changed setup starts afresh."""
        payload = json.dumps({**asdict(self), "batch_chunks": None, "extra": list(extra)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class GenSpec:
    """One LLM call, provider-neutral (the asset turns it into an ``LLMRequest``)."""

    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    json_schema: dict[str, Any] | None
    seed: int
    tag: str
    model: str | None = None


Complete = Callable[[list[GenSpec], str], Sequence[Any]]


class GenerationInterrupted(RuntimeError):
    """Raised by ``stop_after_chunks`` (tests): the journal keeps everything finished so far."""


@dataclass
class GenerationReport:
    chunks_selected: int = 0
    chunks_processed: int = 0
    chunks_resumed: int = 0
    chunks_too_short: int = 0
    chunks_failed: int = 0
    examples_kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    persona_counts: Counter = field(default_factory=Counter)
    response_chars: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    llm_cached: int = 0
    reasks: int = 0
    failures: list[str] = field(default_factory=list)
    torn_line_dropped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunks_selected": self.chunks_selected,
            "chunks_processed": self.chunks_processed,
            "chunks_resumed_from_checkpoint": self.chunks_resumed,
            "chunks_skipped_too_short": self.chunks_too_short,
            "chunks_failed": self.chunks_failed,
            "examples_kept": self.examples_kept,
            "examples_rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "persona_distribution": dict(sorted(self.persona_counts.items())),
            "mean_response_chars": round(self.response_chars / self.examples_kept, 1) if self.examples_kept else 0,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "llm_calls": self.llm_calls,
            "llm_cached_calls": self.llm_cached,
            "reasks": self.reasks,
            "failures": self.failures[:20],
            "torn_checkpoint_line_dropped": self.torn_line_dropped,
        }


def _int_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


def parse_exchange(result: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The ``{user, assistant}`` object from a result, or ``(None, why)``."""
    parsed = getattr(result, "parsed", None)
    if isinstance(parsed, dict):
        obj = parsed
    else:
        text = getattr(result, "text", None) or ""
        start = text.find("{")
        if start < 0:
            return None, "no JSON object in the reply"
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError as exc:
            return None, f"invalid JSON ({exc.msg})"
        if not isinstance(obj, dict):
            return None, "reply JSON is not an object"
    missing = [k for k in ("user", "assistant") if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if missing:
        return None, f"missing or empty field(s): {', '.join(missing)}"
    return {"user": obj["user"].strip(), "assistant": obj["assistant"].strip()}, None


class ChatMLGenerator:
    def __init__(
        self,
        personas: Sequence[Persona],
        query_themes: Sequence[str],
        validator: ExampleValidator,
        settings: GenerationSettings,
        journal_path: Path,
        tag: str = "theme_chatml",
    ):
        if not personas or not query_themes:
            raise ValueError("need at least one persona and one query theme")
        self.personas = list(personas)
        self.query_themes = list(query_themes)
        self.validator = validator
        self.settings = settings
        self.journal = ChunkJournal(journal_path)
        self.tag = tag

    # ---------------------------------------------------------------------------------------- specs
    def plan(self, chunk: dict[str, Any]) -> list[tuple[Persona, str]]:
        rng = random.Random(_int_seed(self.settings.seed, chunk["chunk_id"]))
        return [
            (rng.choice(self.personas), rng.choice(self.query_themes))
            for _ in range(self.settings.examples_per_chunk)
        ]

    def first_spec(self, chunk: dict[str, Any], persona: Persona, theme: str, index: int) -> GenSpec:
        s = self.settings
        messages = [
            {"role": "system", "content": GENERATOR_INSTRUCTIONS.format(persona=persona.prompt)},
            {"role": "user", "content": PASSAGE_MESSAGE.format(
                title=chunk.get("source_title") or "an old book",
                passage=chunk["text"][: s.max_passage_chars], theme=theme)},
        ]
        return GenSpec(messages, s.temperature, s.max_tokens, EXCHANGE_SCHEMA,
                       _int_seed(s.seed, chunk["chunk_id"], index, 0), self.tag, s.model)

    def reask_spec(self, spec: GenSpec, bad_text: str, error: str, attempt: int, chunk_id: str, index: int) -> GenSpec:
        messages = spec.messages + [
            {"role": "assistant", "content": (bad_text or "")[:2000]},
            {"role": "user", "content": REASK_MESSAGE.format(error=error)},
        ]
        return GenSpec(messages, spec.temperature, spec.max_tokens, spec.json_schema,
                       _int_seed(self.settings.seed, chunk_id, index, attempt), spec.tag, spec.model)

    # ------------------------------------------------------------------------------------------ run
    def run(
        self,
        chunks: Iterable[dict[str, Any]],
        complete: Complete,
        max_chunks: int | None = None,
        log: Callable[[str], None] = lambda _msg: None,
        stop_after_chunks: int | None = None,
    ) -> tuple[list[str], GenerationReport]:
        """Process chunks in order; returns the selected chunk ids (in order) and the run's report."""
        report = GenerationReport(torn_line_dropped=self.journal.dropped_torn_line)
        selected: list[str] = []
        todo: list[dict[str, Any]] = []
        for chunk in chunks:
            if max_chunks is not None and len(selected) >= max_chunks:
                break
            selected.append(chunk["chunk_id"])
            if chunk["chunk_id"] in self.journal:
                report.chunks_resumed += 1
            else:
                todo.append(chunk)
        report.chunks_selected = len(selected)
        # rebuild the duplicate-question memory from the finished chunks of this selection, in order, as an
        # uninterrupted run would have it (entries of chunks no longer selected play no part)
        for chunk_id in selected:
            for example in self.journal.entries.get(chunk_id, {}).get("examples", []):
                self.validator.questions.add(example["messages"][1]["content"])
        if report.chunks_resumed:
            log(f"resuming: {report.chunks_resumed} chunks already finished in {self.journal.path}")
        done_now = 0
        for start in range(0, len(todo), self.settings.batch_chunks):
            batch = todo[start : start + self.settings.batch_chunks]
            for entry in self._run_batch(batch, complete, report):
                if entry is None:
                    continue
                if stop_after_chunks is not None and done_now >= stop_after_chunks:
                    raise GenerationInterrupted(f"stopped after {done_now} chunks (test hook)")
                self.journal.append(entry)
                done_now += 1
            log(f"theme_chatml: {min(start + len(batch), len(todo))}/{len(todo)} new chunks done")
        self._tally(selected, report)
        return selected, report

    def _run_batch(self, batch: list[dict[str, Any]], complete: Complete, report: GenerationReport):
        s = self.settings
        jobs: list[dict[str, Any]] = []  # one per example to generate
        entries: list[dict[str, Any]] = []
        for chunk in batch:
            entry = {"chunk_id": chunk["chunk_id"], "examples": [], "rejects": [], "usage": [0, 0], "failed": None}
            entries.append(entry)
            if len(chunk["text"].strip()) < s.min_chunk_chars:
                entry["skipped"] = "too_short"
                continue
            for index, (persona, theme) in enumerate(self.plan(chunk)):
                spec = self.first_spec(chunk, persona, theme, index)
                jobs.append({"entry": entry, "chunk": chunk, "persona": persona, "theme": theme,
                             "index": index, "spec": spec, "exchange": None, "error": None})
        pending = list(jobs)
        for attempt in range(s.max_reasks + 1):
            if not pending:
                break
            if attempt:
                report.reasks += len(pending)
            results = complete([j["spec"] for j in pending], f"{self.tag}/{batch[0]['chunk_id']}")
            if len(results) != len(pending):
                raise RuntimeError(f"LLM client returned {len(results)} results for {len(pending)} requests")
            retry = []
            for job, result in zip(pending, results):
                report.llm_calls += 1
                report.llm_cached += bool(getattr(result, "cached", False))
                usage = getattr(result, "usage", None)
                job["entry"]["usage"][0] += int(getattr(usage, "input_tokens", 0) or 0)
                job["entry"]["usage"][1] += int(getattr(usage, "output_tokens", 0) or 0)
                text = getattr(result, "text", None)
                if not getattr(result, "ok", False) and not text:
                    # no reply at all (connection, timeout, provider error): the chunk is not finished
                    job["entry"]["failed"] = f"{job['chunk']['chunk_id']}: {getattr(result, 'error', 'unknown error')}"
                    continue
                exchange, why = parse_exchange(result)
                if exchange is None and getattr(result, "error", None) and not why:
                    why = str(result.error)
                if exchange is not None:
                    job["exchange"] = exchange
                    continue
                job["error"] = why
                if attempt < s.max_reasks:
                    job["spec"] = self.reask_spec(job["spec"], text or "", why, attempt + 1,
                                                  job["chunk"]["chunk_id"], job["index"])
                    retry.append(job)
            pending = retry
        for job in jobs:  # validate in input order so duplicate detection is deterministic
            entry = job["entry"]
            if entry["failed"]:
                continue
            if job["exchange"] is None:
                entry["rejects"].append({"index": job["index"], "reason": "invalid_json", "detail": job["error"]})
                continue
            verdict = self.validator.check(job["exchange"]["user"], job["exchange"]["assistant"])
            if verdict:
                entry["rejects"].append({"index": job["index"], "reason": verdict[0], "detail": verdict[1],
                                         "persona": job["persona"].name})
                continue
            chunk = job["chunk"]
            entry["examples"].append({
                "messages": [
                    {"role": "system", "content": job["persona"].prompt},
                    {"role": "user", "content": job["exchange"]["user"]},
                    {"role": "assistant", "content": job["exchange"]["assistant"]},
                ],
                "metadata": {
                    "source_id": chunk.get("source_id"),
                    "source_title": chunk.get("source_title", ""),
                    "chunk_id": chunk["chunk_id"],
                    "persona": job["persona"].name,
                    "persona_group": job["persona"].group,
                    "query_theme": job["theme"],
                    "example_index": job["index"],
                },
            })
        for entry in entries:
            if entry["failed"]:
                report.chunks_failed += 1
                report.failures.append(entry["failed"])
                yield None
            else:
                report.chunks_processed += 1
                yield entry

    def _tally(self, selected: list[str], report: GenerationReport) -> None:
        for chunk_id in selected:
            entry = self.journal.entries.get(chunk_id)
            if entry is None:
                continue
            if entry.get("skipped") == "too_short":
                report.chunks_too_short += 1
            for reject in entry["rejects"]:
                report.rejected[reject["reason"]] += 1
            for example in entry["examples"]:
                report.examples_kept += 1
                report.persona_counts[example["metadata"]["persona"]] += 1
                report.response_chars += len(example["messages"][2]["content"])
            report.input_tokens += entry["usage"][0]
            report.output_tokens += entry["usage"][1]

    def examples(self, selected: Iterable[str]) -> list[dict[str, Any]]:
        """Kept examples of the selected chunks, in chunk order then example order."""
        out: list[dict[str, Any]] = []
        for chunk_id in selected:
            out.extend(self.journal.entries.get(chunk_id, {}).get("examples", []))
        return out


def rejects_log(journal: ChunkJournal, selected: Iterable[str]) -> list[dict[str, Any]]:
    """Every reject of the selected chunks, with its chunk id, for the rejects file."""
    return [
        {"chunk_id": chunk_id, **reject}
        for chunk_id in selected
        for reject in journal.entries.get(chunk_id, {}).get("rejects", [])
    ]
