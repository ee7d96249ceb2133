"""Metadata helpers every asset module uses: one markdown table, one preview, one record table, sizes and
LLM usage in the units people read.

Thin ``MetadataValue`` wrappers around ``distillery_assets.markdown`` (which stays Dagster-free). Anything
that is markdown (a table, an image, a preview) goes out as ``MetadataValue.md``: a plain string would show
its markup as text (``tests/unit/test_asset_presentation.py`` checks the asset pages for that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from distillery_assets.markdown import chat_preview, count_text, human_size, md_table, one_line, text_block
from distillery_assets.plots import INLINE_MD_LIMIT


def table_md(rows: Iterable[Sequence[Any]], head: Sequence[str], *, align: str | None = None,
             digits: int = 4) -> dg.MetadataValue:
    """A markdown table entry (rendered inline in the asset's metadata)."""
    return dg.MetadataValue.md(md_table(list(rows), head, align=align, digits=digits))


def text_md(text: str | None, limit: int = 1200) -> dg.MetadataValue:
    """Text with its line breaks kept (poems, prompts, replies)."""
    return dg.MetadataValue.md(text_block(text, limit))


def chat_md(examples: Sequence[dict], n: int = 2, limit: int = 600) -> dg.MetadataValue:
    """The first ChatML examples, turn by turn with their line breaks: as many examples (up to ``n``) and as
    much of each turn (up to ``limit`` characters) as the asset page shows in place (the file holds them all)."""
    md = chat_preview(examples, n=n, limit=limit)
    for count in range(n, 0, -1):
        for cut in (limit, 400, 250, 160, 100, 60):
            if cut <= limit:
                md = chat_preview(examples, n=count, limit=cut)
                if len(md) < INLINE_MD_LIMIT:
                    return dg.MetadataValue.md(md)
    return dg.MetadataValue.md(md)


def _cell(value: Any, limit: int, column: str = "") -> str:
    """A table cell: text on one line (line breaks as `` / ``), dicts as ``key value, ...``, lists joined,
    floats rounded, counts with thousands separators (not ids: :func:`count_text`); clipped to ``limit``
    characters."""
    if (count := count_text(value, column)) is not None:
        text = count
    elif value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k} {_cell(v, limit, str(k))}" for k, v in value.items())
    elif isinstance(value, (list, tuple, set)):
        text = ", ".join(_cell(v, limit) for v in value)
    else:
        text = str(value)
    return one_line(text, limit)


def records_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str], n: int = 8,
                  limit: int = 160, *, long: Sequence[str] = ()) -> dg.TableMetadataValue:
    """The first ``n`` records as a Dagster table that fits the page: each cell on one line (a poem's line
    breaks as `` / ``), dicts and lists spelled out (``dim 3, dim 5``, not a Python repr), clipped to
    ``limit`` characters. ``long``: fields given a row of their own (columns ``field`` and ``text`` after
    ``columns``) instead of a column each, so long texts share one wide column; the full records are in the
    file the asset links."""
    if long:
        schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in (*columns, "field", "text")])
        rows = [dg.TableRecord({**{c: _cell(rec.get(c), limit, c) for c in columns}, "field": f,
                                "text": _cell(rec.get(f), limit, f)})
                for rec in records[:n] for f in long]
        return dg.MetadataValue.table(records=rows, schema=schema)
    schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
    rows = [dg.TableRecord({c: _cell(rec.get(c), limit, c) for c in columns}) for rec in records[:n]]
    return dg.MetadataValue.table(records=rows, schema=schema)


def size(path: Path | str) -> str:
    """The size of a file or folder in the one unit that reads best (``4.20 KB``, ``105.3 MB``)."""
    return human_size(byte_size(path))


def byte_size(path: Path | str) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def path_md(path: Path | str) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))


def inputs_meta(paths: Iterable[Path | str]) -> dict[str, dg.MetadataValue]:
    """``{"inputs": [...]}`` to merge into an ``Output``'s metadata: the files the asset read besides the upstream
    values it loaded. The IO manager records them as the artefact's inputs, and the catalogue records each edited
    file among them (under the inputs or config folder) as a source with its sha256, so lineage reaches it::

        return dg.Output(path, metadata={**inputs_meta(step_sources(cfg, "brief")), "records": n})
    """
    return {"inputs": dg.MetadataValue.json(sorted({str(p) for p in paths}))}


def llm_usage_meta(usage: Mapping[str, Any], provider: str | None = None) -> dict[str, Any]:
    """The LLM figures every asset that called an LLM shows, from ``TaskUsage.as_dict()``: requests, cache
    hits, provider calls and retries (calls beyond one per uncached request: HTTP retries and JSON re-asks),
    answers that were not results (``llm_failed``, and by reason: length, content_filter, refusal,
    tool_call, invalid_json, provider, claimed...), tokens, estimated cost and what that cost is
    (``cost_note``: "local model: no charge", or the list prices it was estimated at). ``provider``: the LLM
    resource's (default: the provider the definitions load with)."""
    requests, hits = int(usage.get("requests", 0)), int(usage.get("cache_hits", 0))
    calls = int(usage.get("provider_calls", 0))
    by_reason = {k.removeprefix("failed_"): int(v) for k, v in sorted(usage.items())
                 if k.startswith("failed_") and v}
    return {
        "llm_requests": requests,
        "llm_cache_hits": hits,
        "llm_provider_calls": calls,
        "llm_retries": max(0, calls - (requests - hits)),
        "llm_failed": int(usage.get("failed", sum(by_reason.values()))),
        "llm_failures_by_reason": by_reason,
        "input_tokens": int(usage.get("input_tokens", 0)),
        "output_tokens": int(usage.get("output_tokens", 0)),
        "estimated_cost_usd": round(float(usage.get("cost_usd", 0.0) or 0.0), 6),
        "cost_note": cost_note(usage, provider),
    }


def cost_note(usage: Mapping[str, Any], provider: str | None = None) -> str:
    """What ``estimated_cost_usd`` is: no charge for the local model, else the provider's list prices (and
    how many requests had no known price, which the estimate leaves out)."""
    if provider is None:
        from distillery_assets.llm import LLMSettings

        provider = LLMSettings.from_env().provider
    if provider == "local":
        return "(local model: no charge)"
    unpriced = int(usage.get("cost_unknown_for", 0) or 0)
    note = f"estimated at {provider}'s list prices per token"
    if unpriced:
        note += f"; {unpriced:,} request(s) unpriced (model not in the price table), not included"
    return note


def require_upstream(path: Path, what: str, asset: str) -> Path:
    """``path`` if it exists; else a Failure naming the file, what it is and the asset that makes it."""
    if not path.exists():
        raise dg.Failure(f"{path}: no {what}; materialize {asset} for this partition first")
    return path
