"""Plain-data summaries of a corpus run (what the asset shows as metadata), kept free of Dagster."""

from __future__ import annotations

import statistics
from pathlib import Path

from distillery_assets.corpus.generate import GenerationReport
from distillery_assets.corpus.plan import PartitionPlan
from distillery_assets.corpus.quality import word_stats

PREVIEW_CHARS = 1200


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def rejects_summary(plans: dict[str, PartitionPlan], limit: int = 200) -> list[str]:
    return [str(r) for plan in plans.values() for r in plan.rejects][:limit]


def run_summary(
    report: GenerationReport, after: dict[str, PartitionPlan], targets: dict[str, str], root: Path
) -> dict:
    """Counts, failures with reasons, word statistics per partition against its target, usage and a preview."""
    generated = report.generated
    in_partition = {
        key: [o for o in generated if o.task.path.is_relative_to(plan.directory)] for key, plan in after.items()
    }
    words = [o.words for o in generated]
    preview = ""
    if generated:
        sample = generated[0].task
        text = sample.path.read_text(encoding="utf-8")
        preview = f"**{relative(sample.path, root)}**\n\n> {sample.prompt}\n\n{text[:PREVIEW_CHARS]}"
    return {
        "generated": len(generated),
        "failed": len(report.failed),
        "failures": {relative(o.task.path, root): o.reason for o in report.failed},
        "truncated_at_max_tokens": sum(o.truncated for o in generated),
        "truncated_files": [relative(o.task.path, root) for o in generated if o.truncated],
        "still_missing": sum(len(p.pending) for p in after.values()),
        "words_median": float(statistics.median(words)) if words else 0.0,
        "words_per_file": {
            key: word_stats([o.words for o in outs], targets[key]) for key, outs in in_partition.items() if outs
        },
        "by_partition": [
            [key, len(plan.existing), len(plan.pending), len(in_partition[key]), targets[key]]
            for key, plan in after.items()
        ],
        "usage": report.totals(),
        "preview": preview,
    }
