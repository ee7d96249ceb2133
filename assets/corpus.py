"""Corpus pipeline: prompts.txt per leaf directory, then the missing .corpus files, per partition.

One factory builds the chain for each half of the corpus:

* ``story_prompts`` -> ``story_corpus`` (partitioned by ``story_group``),
* ``encyclopedia_prompts`` -> ``encyclopedia_corpus`` (partitioned by ``encyclopedia_category``).

Every asset has ``BackfillPolicy.single_run()`` and reports a ``MaterializeResult`` (files are written by
the domain library, not handed to an IO manager), so a ``--partition-range`` or a UI backfill over several
partitions runs as one run. The domain logic lives in :mod:`distillery_assets.corpus`.
"""

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.meta import llm_usage_meta, table_md
from assets.pools import Loads, model_pool
from distillery_assets.catalog import InputRef, NewArtifact
from distillery_assets.corpus.generate import MAX_TOKENS, generate_missing
from distillery_assets.corpus.layout import PROMPTS_FILE, CorpusKind, corpus_root, partition_dir, stale_temp_files
from distillery_assets.corpus.plan import PartitionPlan, scan_partition
from distillery_assets.corpus.prompts import leaves_for, word_target_for, write_leaf
from distillery_assets.corpus.quality import inspect_corpus
from distillery_assets.corpus.summary import rejects_summary, relative, run_summary
from distillery_assets.corpus.tables import default_tables, default_tables_path
from distillery_assets.markdown import INLINE_MD_LIMIT, clip, fit_md_table, md_table
from distillery_assets.partitions import (asset_url, corpus_partitions_read, encyclopedia_category_partitions,
                                         story_group_partitions)
from io_managers.register import FileRegistrar, register_files
from resources.catalog import CatalogResource
from resources.llm import LLMResource


class CorpusRootConfig(dg.Config):
    corpus_root: str | None = Field(
        default=None,
        description="Corpus root directory; default $DISTILLERY_CORPUS_ROOT, else <data dir>/corpus.",
    )


class CorpusGenerateConfig(CorpusRootConfig):
    limit: int | None = Field(
        default=10, description="Most .corpus files to generate in this run (all partitions together); null = all."
    )
    dry_run: bool = Field(default=False, description="List the missing files without calling the LLM.")
    model: str | None = Field(default=None, description="Model id; null = the LLM provider's default model.")
    max_tokens: int = Field(default=MAX_TOKENS, description="Most tokens per document (a cap on cost and time).")
    accept_truncated: bool = Field(
        default=False, description="Write answers cut off at max_tokens (after one larger retry) instead of "
        "failing them; each such file is listed as truncated in the metadata and the catalogue.")
    batch: bool | None = Field(
        default=None, description="Send the missing files' prompts through the provider's batch API (half price, "
        "answers within 24 h); null = the LLM resource's `batch` setting (DISTILLERY_LLM_BATCH).")


def _require_keys(context: dg.AssetExecutionContext) -> list[str]:
    keys = list(context.partition_keys)
    if not keys:
        raise dg.Failure("the run selects no partitions (is the --partition-range given in partition order?)")
    return keys


def _plan_run(context, kind: CorpusKind, keys: list[str], root, prompts_name: str) -> dict[str, PartitionPlan]:
    """Read the partitions' prompts.txt files; log every rejected line; sweep temp files of killed runs."""
    plans = _scan(kind, keys, root)
    unscaffolded = [k for k, p in plans.items() if not p.prompt_files]
    if unscaffolded:
        raise dg.Failure(f"no prompts.txt under {root / kind.value} for {unscaffolded}: "
                         f"materialize {prompts_name} for these partitions first")
    for plan in plans.values():
        for warning in plan.warnings:  # a byte-order mark removed from a prompts.txt
            context.log.warning(warning)
        for reject in plan.rejects:
            context.log.warning(f"rejected {reject}")
        for temp in stale_temp_files(plan.directory):
            context.log.warning(f"removing leftover temporary file of a killed run: {temp}")
            temp.unlink(missing_ok=True)
    return plans


def _dry_run(context, asset_name: str, plans: dict[str, PartitionPlan], root, would_generate: int):
    """One observation per partition listing its missing files; nothing is called, nothing materialized."""
    context.log.info(f"dry run: {sum(len(p.pending) for p in plans.values())} missing, "
                     f"{would_generate} would be generated with this limit")
    for key, plan in plans.items():
        missing = [relative(t.path, root) for t in plan.pending]
        yield dg.AssetObservation(asset_key=asset_name, partition=key, metadata={
            "dry_run": True, "missing": len(missing), "present": len(plan.existing),
            "would_generate_this_run": would_generate, "rejected_lines": len(plan.rejects),
            "rejects": dg.MetadataValue.json([str(r) for r in plan.rejects][:200]),
            "missing_files": dg.MetadataValue.md("\n".join(f"- {m}" for m in missing[:500]) or "(none)"),
        })


def _registrar(context, cat, prompts_name: str, plans: dict[str, PartitionPlan]):
    """A registrar of the run's .corpus files and the ``on_written`` that registers each as it is written (its
    input: the prompts.txt beside it, an artefact of the prompts asset; its partition: the one it was planned
    in): the row is in the catalogue's spool before the next answer is handled, so a kill loses none."""
    files = FileRegistrar(context, cat, outside_data_dir=True, per_file_assets=[prompts_name])
    partition_of = {task.path: key for key, plan in plans.items() for task in plan.pending}

    def on_written(outcome) -> None:
        path = outcome.task.path
        files.add(NewArtifact(path, [InputRef(path.parent / PROMPTS_FILE, prompts_name)],
                              metadata={"words": outcome.words, "truncated": outcome.truncated}),
                  partition=partition_of[path])

    return files, on_written


def _catalogue_found(context, cat, files: FileRegistrar, asset_name: str, prompts_name: str,
                     plans: dict[str, PartitionPlan]) -> None:
    """Register the .corpus files on disk that no row knows (written by a run from before rows were spooled,
    or put there by hand): the plan skips them as done, so this run is the one that knows what they are. Files
    in a spool (a run writing beside this one) are that run's to record."""
    known = {r["path"] for r in cat.query("SELECT DISTINCT path FROM artifacts WHERE asset_key = ?", [asset_name])}
    known |= cat.spooled_paths(asset_name)
    found = [(key, task) for key, plan in plans.items() for task in plan.existing
             if cat.relative(task.path) not in known]
    for key, task in found:
        files.add(NewArtifact(task.path, [InputRef(task.path.parent / PROMPTS_FILE, prompts_name)],
                              metadata={"found": "on disk before this run, with no catalogue row"}), partition=key)
    if found:
        context.log.warning(f"{len(found)} .corpus file(s) on disk had no catalogue row; recorded now "
                            f"(e.g. {task.path})")


def _record(cat, context, asset_name: str, files: FileRegistrar, after: dict[str, PartitionPlan], summary: dict,
            config: CorpusGenerateConfig) -> None:
    """Commit the .corpus rows spooled as the files were written, and record the run's usage."""
    files.commit()
    cat.record_run(kind="generate", name=asset_name, partition=",".join(after), run_id=context.run_id,
                   params={"limit": config.limit, "model": config.model, "max_tokens": config.max_tokens},
                   metrics={**summary["usage"], "generated": summary["generated"], "failed": summary["failed"]})


def _scan(kind: CorpusKind, keys: list[str], root) -> dict[str, PartitionPlan]:
    return {key: scan_partition(partition_dir(root, kind, key)) for key in keys}


def _write_prompts(context, kind: CorpusKind, config: CorpusRootConfig, cat) -> dg.MaterializeResult:
    """Render every leaf's prompts.txt of the run's partitions from the prompt tables; register each."""
    tables, root, keys = default_tables(), corpus_root(config.corpus_root), _require_keys(context)
    written_by_key: dict[str, list] = {key: [] for key in keys}
    for key in keys:
        for leaf in leaves_for(tables, kind, key):
            written = write_leaf(root, leaf)
            register_files(context, cat, [written.path], [default_tables_path()], partition=key,
                           record_count=written.lines, outside_data_dir=True)
            written_by_key[key].append((leaf, written))
    rows = [w for per in written_by_key.values() for w in per]
    context.log.info(f"wrote {len(rows)} prompts.txt files ({sum(w.lines for _, w in rows)} prompts) under {root}")
    for key in keys:  # each partition's own event describes that partition (a range runs as one run)
        context.add_asset_metadata(partition_key=key,
                                   metadata=_prompts_partition_meta(partition_dir(root, kind, key), written_by_key[key]))
    return dg.MaterializeResult(metadata={
        "corpus_root": dg.MetadataValue.path(str(root)),
        "run_partitions": len(keys),
        **({"run_prompts_files": len(rows), "run_prompts": sum(w.lines for _, w in rows)} if len(keys) > 1 else {}),
    })


def _prompts_partition_meta(folder: Path, written: list) -> dict[str, Any]:
    """One partition's page after its prompts.txt files were written: counts, a table of its leaf folders and
    the first prompts, each short enough to show in place, with the folder and the first file one click away."""
    meta: dict[str, Any] = {
        "prompts_files": len(written), "prompts": sum(w.lines for _, w in written),
        "changed_files": sum(w.changed for _, w in written),
        "folder": dg.MetadataValue.path(str(folder)),
    }
    if not written:
        return {**meta, "files": "none", "preview": "none"}
    meta["files"] = dg.MetadataValue.md(fit_md_table(
        [(relative(w.path.parent, folder), w.lines, "yes" if w.changed else "no") for _, w in written],
        ["leaf folder", "prompts", "changed"], align="lrl",
        more=lambda n: f"… and {n:,} more folders under `folder`, each with its prompts.txt"))
    leaf, first = written[0]
    head = f"**{relative(first.path, folder)}**: {first.lines:,} prompts, one `.corpus` file each\n\n"
    meta["preview"] = dg.MetadataValue.md(head + fit_md_table(
        [(line.file, line.prompt) for line in leaf.lines], [".corpus file", "prompt"],
        limit=INLINE_MD_LIMIT - len(head), more=lambda n: f"… and {n:,} more in `preview_file`"))
    meta["preview_file"] = dg.MetadataValue.path(str(first.path))
    return meta


def _corpus_metadata(root, keys: list[str], plans: dict[str, PartitionPlan], summary: dict) -> dict:
    return {
        "corpus_root": dg.MetadataValue.path(str(root)),
        "partitions": len(keys),
        "generated": summary["generated"],
        "skipped_existing": sum(len(p.existing) for p in plans.values()),
        "failed": summary["failed"],
        "failures": dg.MetadataValue.json(summary["failures"]),
        "still_missing": summary["still_missing"],
        "rejected_lines": sum(len(p.rejects) for p in plans.values()),
        "rejects": dg.MetadataValue.json(rejects_summary(plans)),
        "truncated_at_max_tokens": summary["truncated_at_max_tokens"],
        "truncated_files": dg.MetadataValue.json(summary["truncated_files"]),
        "words_median": summary["words_median"],
        "words_per_file": dg.MetadataValue.json(summary["words_per_file"]),
        "by_partition": table_md(summary["by_partition"],
                                 ["partition", "present", "missing", "generated now", "word target"], align="lrrrl"),
        **llm_usage_meta(summary["usage"]),
        "preview": dg.MetadataValue.md(clip(summary["preview"], INLINE_MD_LIMIT - 1) or "(nothing generated)"),
    }


def _generate(context, kind: CorpusKind, names: tuple[str, str], config: CorpusGenerateConfig, llm: LLMResource,
              catalog: CatalogResource):
    """The missing .corpus files of the run's partitions (up to ``limit``), or a dry-run observation."""
    prompts_name, corpus_name = names
    if config.limit is not None and config.limit < 1:
        raise dg.Failure(f"config.limit must be at least 1 or null (got {config.limit}); use dry_run to list")
    tables, root, keys = default_tables(), corpus_root(config.corpus_root), _require_keys(context)
    cat = catalog.get()
    if not config.dry_run:  # rows a killed run (or one that found the catalogue busy) left in the spool
        cat.recover()
    plans = _plan_run(context, kind, keys, root, prompts_name)
    pending = [task for plan in plans.values() for task in plan.pending]
    selected = pending if config.limit is None else pending[: config.limit]
    if config.dry_run:
        yield from _dry_run(context, corpus_name, plans, root, len(selected))
        return
    overrides = {"batch": config.batch} if config.batch is not None else {}
    client = llm.get_client(context, **overrides) if selected else None  # a finished set needs no client, no model
    files, on_written = _registrar(context, cat, prompts_name, plans)
    _catalogue_found(context, cat, files, corpus_name, prompts_name, plans)
    try:
        report = generate_missing(selected, client, model=config.model, tag=corpus_name,
                                  label=f"{corpus_name}/{keys[0] if len(keys) == 1 else f'{keys[0]}...{keys[-1]}'}",
                                  max_tokens=config.max_tokens, accept_truncated=config.accept_truncated,
                                  on_written=on_written)
    except BaseException:
        try:  # what was written before the failure gets its rows now (or stays spooled for the next run)
            files.commit()
        except Exception as exc:
            context.log.error(f"the rows of the {files.count} file(s) written are not in the catalogue yet: {exc}")
        raise
    for outcome in report.failed:
        context.log.error(f"FAILED {relative(outcome.task.path, root)}: {outcome.reason}")
    after = _scan(kind, keys, root)
    summary = run_summary(report, after, {k: word_target_for(tables, kind, k) for k in keys}, root)
    _record(cat, context, corpus_name, files, after, summary, config)
    if report.failed and not report.generated:
        raise dg.Failure(f"all {len(report.failed)} requests failed; first: {report.failed[0].reason}",
                         metadata={"failures": dg.MetadataValue.json(summary["failures"])})
    for key, present, missing, generated, target in summary["by_partition"]:  # what each partition holds now
        context.add_asset_metadata(partition_key=key, metadata={
            "partition_files_present": present, "partition_files_missing": missing,
            "partition_generated_now": generated, "partition_word_target": str(target)})
    yield dg.MaterializeResult(metadata=_corpus_metadata(root, keys, plans, summary))


def _parse_check(context, kind: CorpusKind, partitions_def, config: CorpusRootConfig) -> dg.AssetCheckResult:
    keys, scoped = _checked_partitions(context, partitions_def)
    plans = _scan(kind, keys, corpus_root(config.corpus_root))
    empty = [k for k, p in plans.items() if not p.prompt_files]
    if not scoped:  # a check-only run over everything: judge what exists (no partition has to be there yet)
        plans = {k: p for k, p in plans.items() if p.prompt_files}
    rejects = [str(r) for p in plans.values() for r in p.rejects]
    return dg.AssetCheckResult(
        passed=bool(plans) and not rejects and not (scoped and empty),
        metadata={"partitions_checked": dg.MetadataValue.json(list(plans)),
                  "prompts": sum(p.total for p in plans.values()), "rejected": len(rejects),
                  "partitions_without_prompts": dg.MetadataValue.json(empty),
                  "rejects": dg.MetadataValue.json(rejects[:100])},
    )


# Every asset here runs a multi-partition backfill as one run (BackfillPolicy.single_run()). Dagster marks the parameter
# beta and warns at every definition load, i.e. in every step's subprocess: 20 identical lines per CLI run.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` of function `asset` is currently in beta",
                        category=dg.BetaWarning)


def build_corpus_chain(kind: CorpusKind, prompts_name: str, corpus_name: str, partitions_def: dg.PartitionsDefinition):
    """The prompts asset, the corpus asset and their checks for one half of the corpus (the two asset names are
    spelled out by the caller, so a search for either finds where it is declared)."""

    @dg.asset(name=prompts_name, group_name="corpus", partitions_def=partitions_def,
              backfill_policy=dg.BackfillPolicy.single_run(), kinds={"python"},
              description="prompts.txt for every leaf directory of the partition, rendered from "
              "data/config/corpus/prompt_tables.yaml; .corpus files beside them are never touched.")
    def prompts_asset(context: dg.AssetExecutionContext, config: CorpusRootConfig,
                      catalog: CatalogResource) -> dg.MaterializeResult:
        return _write_prompts(context, kind, config, catalog.get())

    @dg.asset(name=corpus_name, group_name="corpus", pool=model_pool(Loads.LLM),  # local_model only for an in-process LLM
              partitions_def=partitions_def, deps=[prompts_asset], backfill_policy=dg.BackfillPolicy.single_run(),
              output_required=False, kinds={"python"},  # a dry run observes, it does not materialize
              description="The missing .corpus files of the partition, generated by the LLM resource (temperature "
              "0.8, up to 4096 tokens, plain prose) and written atomically; existing files are skipped.")
    def corpus_asset(context: dg.AssetExecutionContext, config: CorpusGenerateConfig, llm: LLMResource,
                     catalog: CatalogResource):
        yield from _generate(context, kind, (prompts_name, corpus_name), config, llm, catalog)

    return [prompts_asset, corpus_asset], _corpus_checks(kind, partitions_def, prompts_asset, corpus_asset)


def _corpus_checks(kind: CorpusKind, partitions_def: dg.PartitionsDefinition, prompts_asset, corpus_asset) -> list:
    """The three checks of one half of the corpus: prompts parse, files are prose, word counts on target."""

    @dg.asset_check(asset=prompts_asset, name="every_line_parses",
                    description="Every line of every prompts.txt of the run's partitions (a run without partitions: "
                    "of every partition that has prompts) is '<file>.corpus <prompt>' with a safe file name.")
    def prompts_parse_check(context: dg.AssetCheckExecutionContext, config: CorpusRootConfig) -> dg.AssetCheckResult:
        return _parse_check(context, kind, partitions_def, config)

    @dg.asset_check(asset=corpus_asset, name="files_are_prose",
                    description="Each .corpus on disk in the run's partitions (without partitions: all) is "
                    "non-empty UTF-8 (error); markdown headings or meta commentary such as 'Here is' are warnings.")
    def prose_check(context: dg.AssetCheckExecutionContext, config: CorpusRootConfig) -> dg.AssetCheckResult:
        keys, _ = _checked_partitions(context, partitions_def)
        return _inspect(keys, kind, corpus_root(config.corpus_root), with_target=False)

    @dg.asset_check(asset=corpus_asset, name="word_counts_on_target",
                    description="Word count of each .corpus on disk in the run's partitions (without partitions: "
                    "all) against its target range (warning).")
    def word_count_check(context: dg.AssetCheckExecutionContext, config: CorpusRootConfig) -> dg.AssetCheckResult:
        keys, _ = _checked_partitions(context, partitions_def)
        return _inspect(keys, kind, corpus_root(config.corpus_root), with_target=True)

    return [prompts_parse_check, prose_check, word_count_check]


def _checked_partitions(context: dg.AssetCheckExecutionContext,
                        partitions_def: dg.PartitionsDefinition) -> tuple[list[str], bool]:
    """The partitions a check judges, and whether the run named them: the run's partition or range (with the
    asset, or a check-only run launched for a partition), else every partition. The checks are not
    partitioned themselves: Dagster runs a partitioned check neither in a single-run partition range nor
    alone, so each reads the run's partitions instead."""
    if context.has_partition_key_range:
        return list(context.partition_keys), True
    if context.has_partition_key:
        return [context.partition_key], True
    return partitions_def.get_partition_keys(), False


def _inspect(keys: list[str], kind: CorpusKind, root, *, with_target: bool) -> dg.AssetCheckResult:
    tables = default_tables()
    errors, warnings, counts = {}, {}, []
    for key, plan in _scan(kind, keys, root).items():
        target = word_target_for(tables, kind, key)
        for task in plan.existing:
            words, findings = inspect_corpus(task.path.read_bytes(), target)
            counts.append(words)
            for f in findings:
                if (f.code == "word_count") != with_target:
                    continue
                (errors if f.severity == "error" else warnings).setdefault(relative(task.path, root), []).append(f.message)
    severity = dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        passed=not errors and not warnings,
        severity=severity,
        metadata={"partitions_checked": dg.MetadataValue.json(keys),
                  "files_checked": len(counts), "errors": len(errors), "warnings": len(warnings),
                  "findings": dg.MetadataValue.json(dict(list({**warnings, **errors}.items())[:100]))},
    )


# ------------------------------------------------------------- read by assets of other partitions definitions

def corpus_read_meta(paths: Iterable[str | Path], *, assets: Iterable[str] | None = None,
                     documents: Iterable[str | Path] | None = None, root: Path | None = None) -> dict[str, Any]:
    """What a reader partitioned otherwise (a filter version, a thyme experiment) read of the corpus, for its
    asset page: one markdown entry per corpus asset (``read <asset>``: the partitions read, each linked to
    its page in the UI, with its ``.corpus`` files and, given ``documents`` (the paths of the documents
    kept), how many of them were kept), and ``corpus_partitions_read`` (``{asset: {partition: files}}``).
    These are catalogue edges, not Dagster ones: a run holds one partitions definition."""
    root = Path(root) if root is not None else corpus_root()
    counts = corpus_partitions_read(paths, root, assets)
    kept = corpus_partitions_read(documents, root, assets) if documents is not None else None
    meta: dict[str, Any] = {}
    for asset, per in counts.items():
        meta[f"read {asset}"] = dg.MetadataValue.md(_read_md(asset, per, None if kept is None else kept[asset]))
    meta["corpus_partitions_read"] = dg.MetadataValue.json(
        {asset: {p: n for p, n in per.items() if n} for asset, per in counts.items()})
    return meta


def _read_md(asset: str, files: dict[str, int], kept: dict[str, int] | None) -> str:
    read = [p for p, n in files.items() if n]
    head = (f"{len(read)} of {len(files)} partitions of [{asset}]({asset_url(asset)}), "
            f"{sum(files.values()):,} `.corpus` files (catalogue edges, not Dagster ones)")
    if not read:
        return f"{head}: no partition has any yet."
    cols = ["partition", ".corpus files", *(["documents kept"] if kept is not None else [])]
    rows = [(f"[{p}]({asset_url(asset, p)})", f"{files[p]:,}", *([f"{kept[p]:,}"] if kept is not None else []))
            for p in read]
    md = f"{head}\n\n{md_table(rows, cols, align='l' + 'r' * (len(cols) - 1))}"
    unread = [p for p, n in files.items() if not n]
    if unread:
        linked = f"\n\nNo `.corpus` files yet: {', '.join(f'[{p}]({asset_url(asset, p)})' for p in unread)}"
        md += linked if len(md + linked) < INLINE_MD_LIMIT else f"\n\nNo `.corpus` files yet: {', '.join(unread)}"
    return md


_story_assets, _story_checks = build_corpus_chain(CorpusKind.STORIES, "story_prompts", "story_corpus",
                                                  story_group_partitions)
_encyclopedia_assets, _encyclopedia_checks = build_corpus_chain(
    CorpusKind.ENCYCLOPEDIA, "encyclopedia_prompts", "encyclopedia_corpus", encyclopedia_category_partitions
)
story_prompts, story_corpus = _story_assets
encyclopedia_prompts, encyclopedia_corpus = _encyclopedia_assets

defs = dg.Definitions(
    assets=[*_story_assets, *_encyclopedia_assets],
    asset_checks=[*_story_checks, *_encyclopedia_checks],
)
