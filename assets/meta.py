"""Metadata helpers every asset module uses: one markdown table, one preview, one record table.

Thin ``MetadataValue`` wrappers around ``distillery_assets.markdown`` (which stays Dagster-free).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from distillery_assets.markdown import chat_preview, md_table, text_block


def table_md(rows: Iterable[Sequence[Any]], head: Sequence[str], *, align: str | None = None,
             digits: int = 4) -> dg.MetadataValue:
    """A markdown table entry (rendered inline in the asset's metadata)."""
    return dg.MetadataValue.md(md_table(list(rows), head, align=align, digits=digits))


def text_md(text: str | None, limit: int = 1200) -> dg.MetadataValue:
    """Text with its line breaks kept (poems, prompts, replies)."""
    return dg.MetadataValue.md(text_block(text, limit))


def chat_md(examples: Sequence[dict], n: int = 2, limit: int = 600) -> dg.MetadataValue:
    """The first ChatML examples, turn by turn."""
    return dg.MetadataValue.md(chat_preview(examples, n=n, limit=limit))


def records_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str], n: int = 10,
                  limit: int = 200) -> dg.TableMetadataValue:
    """The first ``n`` records as a Dagster table (strings clipped to ``limit`` characters)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
    rows = []
    for rec in records[:n]:
        data = {}
        for c in columns:
            value = rec.get(c)
            text = value if isinstance(value, str) else ("" if value is None else str(value))
            data[c] = text if len(text) <= limit else text[: limit - 1] + "…"
        rows.append(dg.TableRecord(data))
    return dg.MetadataValue.table(records=rows, schema=schema)


def size_mb(path: Path) -> float:
    """Size of a file or folder in MB, rounded to 2 places."""
    path = Path(path)
    total = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return round(total / 1e6, 2)


def path_md(path: Path | str) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))


def inputs_meta(paths: Iterable[Path | str]) -> dict[str, dg.MetadataValue]:
    """``{"inputs": [...]}`` to merge into an ``Output``'s metadata: the files the asset read besides the upstream
    values it loaded. The IO manager records them as the artefact's inputs, and the catalogue records each edited
    file among them (under the inputs or config folder) as a source with its sha256, so lineage reaches it::

        return dg.Output(path, metadata={**inputs_meta(step_sources(cfg, "brief")), "records": n})
    """
    return {"inputs": dg.MetadataValue.json(sorted({str(p) for p in paths}))}


def llm_usage_meta(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The LLM figures every asset that called an LLM shows, from ``TaskUsage.as_dict()``: requests, cache
    hits, provider calls and retries (calls beyond one per uncached request: HTTP retries and JSON re-asks),
    tokens and estimated cost."""
    requests, hits = int(usage.get("requests", 0)), int(usage.get("cache_hits", 0))
    calls = int(usage.get("provider_calls", 0))
    return {
        "llm_requests": requests,
        "llm_cache_hits": hits,
        "llm_provider_calls": calls,
        "llm_retries": max(0, calls - (requests - hits)),
        "input_tokens": int(usage.get("input_tokens", 0)),
        "output_tokens": int(usage.get("output_tokens", 0)),
        "estimated_cost_usd": round(float(usage.get("cost_usd", 0.0) or 0.0), 6),
    }


def require_upstream(path: Path, what: str, asset: str) -> Path:
    """``path`` if it exists; else a Failure naming the file, what it is and the asset that makes it."""
    if not path.exists():
        raise dg.Failure(f"{path}: no {what}; materialize {asset} for this partition first")
    return path
