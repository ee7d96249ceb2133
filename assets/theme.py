"""Theme pipeline: Gutenberg books -> chunks -> keyword-filtered chunks -> persona ChatML -> train/val
splits (-> theme LoRA -> GGUF through the shared fine-tune chain), plus the generator-model benchmark.

Thin wiring: the work lives in ``distillery_assets.theme``; editable data in ``data/config/theme/``
(books.json, theme_keywords.json, personas.yaml, query_themes.txt, anachronisms.txt); outputs under
``data/theme/``. Each asset returns the Path it wrote (the IO manager catalogues it).

Offline run on the shipped sample books (LLM provider from DISTILLERY_LLM_*, default ``local`` SmolLM2):

    dagster asset materialize -m distillery_assets.definitions --select '*theme_chatml_val' \
        --config-json '{"ops": {"theme_chatml": {"config": {"max_chunks": 4, "examples_per_chunk": 1}}}}'

``gutenberg_books``, ``gutenberg_chunks`` and ``theme_chunks`` skip finished work: each computes the step
fingerprint (:func:`distillery_assets.steps.step_fingerprint`) of its settings, its asset code version and the
sha256 of every file it reads, and when the asset's last materialization recorded the same fingerprint and its
file on disk still has the sha256 recorded then, nothing is read or written: the new materialization carries
the last one's figures with ``reused: true`` (the catalogue gets this run's row for the same file). So
``*filter_report`` of a filter that reads no Gutenberg chunks (or ``*thyme_eval``) costs those steps their
launch and a fingerprint each. Bump an asset's ``code_version`` when its code changes what it writes.

Against LM Studio / llama.cpp server: DISTILLERY_LLM_PROVIDER=openai DISTILLERY_LLM_BASE_URL=http://localhost:1234/v1
DISTILLERY_LLM_MODEL=<id>. Killing theme_chatml and materializing again continues after the last finished
chunk (checkpoint journal under data/theme/chatml_work/<setup fingerprint>/). Model benchmark:
``--select theme_model_benchmark`` with ``base_url`` config, or ``python benchmarks/theme_models.py``.
"""

import dataclasses
import json
import typing
from collections import Counter
from pathlib import Path

import dagster as dg
from pydantic import create_model

from assets.finetune import FinetuneChain, finetune_chain
from assets.meta import chat_md, inputs_meta, llm_usage_meta, records_table, table_md
from assets.pools import Loads, model_pool

from distillery_assets.io import atomic_write_jsonl, atomic_write_text, iter_jsonl, read_jsonl
from distillery_assets.io.hashing import sha256_file_cached
from distillery_assets.paths import config_dir, data_dir
from distillery_assets.datasets import chatml
from distillery_assets.theme import books, chunking, keywords, modelbench, plots, setup
from distillery_assets.theme import config as theme_config
from distillery_assets.theme.generate import ChatMLGenerator, GenerationSettings
from distillery_assets.theme.validate import ValidatorSettings
from distillery_assets.steps import step_fingerprint
from resources.catalog import CatalogResource
from resources.llm import LLMResource

GROUP = "theme"


def _out(name: str) -> Path:
    folder = data_dir() / "theme"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _cfg(name: str) -> Path:
    return config_dir() / "theme" / name


# ------------------------------------------------------------------------------------------- reuse

# What the IO manager adds to a returned Path's materialization (recomputed for the new run's catalogue row), and
# this module's own reuse keys: not carried over from the materialization that is reused.
_NOT_CARRIED = frozenset({"path", "size", "sha256", "catalog_artifact_id", "records", "files", "inputs",
                          "reused", "reused_from_run", "fingerprint"})


def _fingerprint(context: dg.AssetExecutionContext, settings: dict, files: list[Path]) -> str:
    """The step fingerprint of this asset: its settings, its code version and the sha256 of each file it reads."""
    code = context.assets_def.code_versions_by_key.get(context.asset_key)
    return step_fingerprint({"asset": context.asset_key.to_user_string(), "code_version": code, **settings}, files)


def _reusable(context: dg.AssetExecutionContext, fingerprint: str, path: Path,
              also: tuple[Path, ...] = ()) -> dict[str, typing.Any] | None:
    """The figures of this asset's last materialization, when it was made with ``fingerprint`` and its file is
    still there unchanged (the same path, the sha256 it recorded) beside the files in ``also``; else None (first
    run, a setting, an input or the code changed, the file was edited or removed)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    done = event.asset_materialization if event is not None else None
    if done is None:
        return None
    meta = done.metadata
    recorded = {k: getattr(meta.get(k), "value", None) for k in ("fingerprint", "path", "sha256")}
    if recorded["fingerprint"] != fingerprint or not path.is_file() or not all(p.exists() for p in also):
        return None
    if Path(str(recorded["path"])).resolve() != path.resolve() or recorded["sha256"] != sha256_file_cached(path):
        return None
    context.log.info(f"{path.name}: made from the same inputs and settings (fingerprint {fingerprint}, run "
                     f"{event.run_id}); reused, nothing read or written")
    return {**{k: v for k, v in meta.items() if k not in _NOT_CARRIED}, "reused_from_run": event.run_id}


def _reused_output(path: Path, fingerprint: str, carried: dict[str, typing.Any],
                   inputs: typing.Sequence[Path] = ()) -> dg.Output[Path]:
    """The last materialization's figures again, marked reused; ``inputs``: the files it was made from besides
    the upstream values (recorded as this run's catalogue inputs, as a fresh run records them)."""
    extra = inputs_meta(inputs) if inputs else {}
    return dg.Output(path, metadata={**carried, **extra, "reused": True, "fingerprint": fingerprint})


# ------------------------------------------------------------------------------------------- books


class BooksConfig(dg.Config):
    source: str = "local"  # local | hf | mirror
    local_dir: str | None = None  # default: data/inputs/gutenberg
    mirror_url: str | None = None  # e.g. https://www.gutenberg.org
    ids: list[int] | None = None  # default: every id in data/config/theme/books.json


@dg.asset(group_name=GROUP, kinds={"python"}, code_version="1",
          description="Project Gutenberg books, licence wrapper stripped, one JSONL record per book (reused when "
                      "books.json, the run config and every local book read are unchanged).")
def gutenberg_books(context: dg.AssetExecutionContext, config: BooksConfig) -> dg.Output[Path]:
    selection = books.load_selection(_cfg(theme_config.BOOKS_FILE))
    path, rejects_path = _out("gutenberg_books.jsonl"), _out("gutenberg_books.rejects.jsonl")
    local = books.local_files(books.local_directory(config.local_dir), selection, config.ids) \
        if config.source == "local" else []  # hf / mirror: reused by their settings, as thyme's Hub sources
    read = [_cfg(theme_config.BOOKS_FILE), *local]
    fingerprint = _fingerprint(context, {"config": config.model_dump(), "local_files": [p.name for p in local]}, read)
    if (carried := _reusable(context, fingerprint, path, also=(rejects_path,))) is not None:
        return _reused_output(path, fingerprint, carried, read)
    try:
        batch = books.load_books(config.source, selection, config.ids, local_dir=config.local_dir,
                                 mirror_url=config.mirror_url)
    except books.BookError as exc:
        raise dg.Failure(str(exc)) from exc
    for reject in batch.rejects:
        context.log.error(f"book rejected: {reject.reason}")
    for warning in batch.warnings:
        context.log.warning(warning)
    records = list(books.dedupe(batch.records))
    if not records:
        raise dg.Failure(f"no usable books (rejected: {[r.reason for r in batch.rejects]}, missing: {batch.missing})")
    atomic_write_jsonl(path, records)
    atomic_write_jsonl(rejects_path, [{"source": r.source, "id": r.book_id, "reason": r.reason} for r in batch.rejects])
    return dg.Output(path, metadata={
        **inputs_meta([_cfg(theme_config.BOOKS_FILE), *batch.files]), "reused": False, "fingerprint": fingerprint,
        "books": len(records),
        "rejected": len(batch.rejects),
        "not_available": dg.MetadataValue.json(batch.missing),
        "characters": sum(r["length"] for r in records),
        "books_table": table_md([(r["id"], r["title"], r["author"], r["pub_year"], r["length"], r["category"])
                                 for r in records], ("id", "title", "author", "year", "chars", "category")),
        "rejects": table_md([(r.book_id, r.reason) for r in batch.rejects], ("id", "reason")),
        "warnings": dg.MetadataValue.json(batch.warnings[:50]),
        "source": config.source,
    })


@dg.asset_check(asset=gutenberg_books, description="Book ids are unique and every book has text.")
def gutenberg_books_valid(gutenberg_books: Path) -> dg.AssetCheckResult:
    ids = Counter(r["id"] for r in read_jsonl(gutenberg_books))
    empty = [r["id"] for r in read_jsonl(gutenberg_books) if not r["text"].strip()]
    dupes = [i for i, n in ids.items() if n > 1]
    return dg.AssetCheckResult(passed=not dupes and not empty, metadata={"duplicates": str(dupes), "empty": str(empty)})


# ------------------------------------------------------------------------------------------ chunks


class ChunkConfig(dg.Config):
    chunk_size: int = 1024
    overlap: int = 128
    min_chunk_size: int = 256


@dg.asset(group_name=GROUP, kinds={"python"}, code_version="1",
          description="Paragraph chunks with stable ids '<book id>-<index>' (reused when the books and the chunk "
                      "settings are unchanged).")
def gutenberg_chunks(context: dg.AssetExecutionContext, gutenberg_books: Path, config: ChunkConfig) -> dg.Output[Path]:
    params = chunking.ChunkParams(config.chunk_size, config.overlap, config.min_chunk_size)
    path = _out("gutenberg_chunks.jsonl")
    fingerprint = _fingerprint(context, {"params": params.__dict__}, [gutenberg_books])
    if (carried := _reusable(context, fingerprint, path)) is not None:
        return _reused_output(path, fingerprint, carried)
    per_book: Counter = Counter()
    book_rows = (book for _, book in iter_jsonl(gutenberg_books, on_error="raise"))
    n = atomic_write_jsonl(path, chunking.chunk_books(book_rows, params, per_book))
    return dg.Output(path, metadata={
        "reused": False, "fingerprint": fingerprint, "chunks": n,
        "chunks_per_book": dg.MetadataValue.json({str(k): v for k, v in per_book.items()}),
        "params": dg.MetadataValue.json(params.__dict__),
    })


@dg.asset_check(asset=gutenberg_chunks, description="Chunk ids are unique, stable (<book id>-<index>) and lengths true.")
def gutenberg_chunks_valid(gutenberg_chunks: Path) -> dg.AssetCheckResult:
    rows = read_jsonl(gutenberg_chunks)
    ids = Counter(r["chunk_id"] for r in rows)
    dupes = [i for i, n in ids.items() if n > 1]
    bad = [r["chunk_id"] for r in rows if not r["text"].strip() or r["length"] != len(r["text"])
           or r["chunk_id"] != f"{r['source_id']}-{r['index']}"]
    return dg.AssetCheckResult(passed=bool(rows) and not dupes and not bad,
                               metadata={"chunks": len(rows), "duplicate_ids": str(dupes[:20]), "malformed": str(bad[:20])})


# ---------------------------------------------------------------------------- keyword-filtered chunks


class ThemeFilterConfig(dg.Config):
    min_matches: int = 2


@dg.asset(group_name=GROUP, kinds={"python"}, code_version="1",
          description="Chunks whose theme keyword total (distinct whole-word keywords per theme, summed) reaches "
                      "min_matches (reused when the chunks, the keyword sets and min_matches are unchanged).")
def theme_chunks(context: dg.AssetExecutionContext, gutenberg_chunks: Path, config: ThemeFilterConfig) -> dg.Output[Path]:
    keywords_file = _cfg(theme_config.KEYWORDS_FILE)
    path, plot_path = _out("theme_chunks.jsonl"), _out("theme_chunks_totals.png")
    fingerprint = _fingerprint(context, {"min_matches": config.min_matches}, [gutenberg_chunks, keywords_file])
    if (carried := _reusable(context, fingerprint, path, also=(plot_path,))) is not None:
        return _reused_output(path, fingerprint, carried, [keywords_file])
    sets = keywords.load_keyword_sets(keywords_file)
    kept = keywords.ChunkFilter(keywords.KeywordCounter(sets), config.min_matches)
    n_kept = atomic_write_jsonl(path, kept.kept(row for _, row in iter_jsonl(gutenberg_chunks, on_error="raise")))
    context.log.info(f"keyword counting: {kept.megabytes:.2f} MB in {kept.seconds:.3f}s")
    totals, hist = kept.totals, keywords.histogram(kept.totals)
    plot_md = plots.save_png(plots.totals_histogram_png(hist, config.min_matches), plot_path, "keyword totals")
    return dg.Output(path, metadata={
        **inputs_meta([keywords_file]), "reused": False, "fingerprint": fingerprint,
        "kept": n_kept, "total": len(totals), "kept_fraction": round(n_kept / len(totals), 4) if totals else 0.0,
        "min_matches": config.min_matches,
        "histogram_of_totals": table_md(list(hist.items()), ("total", "chunks"), align="rr"),
        "histogram_plot": dg.MetadataValue.md(plots.totals_histogram_inline_md(hist, config.min_matches)),
        "histogram_full": dg.MetadataValue.md(plot_md), "histogram_png": dg.MetadataValue.path(str(plot_path)),
        "top_themes": table_md(kept.theme_hits.most_common(16), ("theme", "kept chunks with >=1 keyword"),
                               align="lr"),
        "count_rate_mb_s": kept.rate_mb_s,
        "preview": _chunks_preview(path),
    })


def _chunks_preview(path: Path, n: int = 10) -> dg.TableMetadataValue:
    """The first kept chunks as a table: id, keyword total, the themes they hit, the text's start."""
    rows = []
    for _, row in iter_jsonl(path, on_error="raise"):
        counts = row["keyword_counts"]
        rows.append({"chunk_id": row["chunk_id"], "keywords": counts["total"], "text": row["text"],
                     "themes": ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total" and v)})
        if len(rows) == n:
            break
    return records_table(rows, ["chunk_id", "keywords", "themes"], n=n, long=["text"])


@dg.asset_check(asset=theme_chunks, description="Every kept chunk meets the threshold and its total equals the sum of its themes.")
def theme_chunks_consistent(theme_chunks: Path) -> dg.AssetCheckResult:
    rows = read_jsonl(theme_chunks)
    bad = [r["chunk_id"] for r in rows
           if r["keyword_counts"]["total"] != sum(v for k, v in r["keyword_counts"].items() if k != "total")]
    return dg.AssetCheckResult(passed=bool(rows) and not bad, metadata={"kept": len(rows), "inconsistent": str(bad[:20])})


# ------------------------------------------------------------------------------------------ ChatML


def _config_fields(*settings: type) -> dict:
    """Run-config fields taken from the library's settings dataclasses (one definition of each setting)."""
    return {f.name: (typing.get_type_hints(cls)[f.name], f.default) for cls in settings
            for f in dataclasses.fields(cls)}


ChatMLConfig = create_model("ChatMLConfig", __base__=dg.Config, max_chunks=(int | None, None),
                            **_config_fields(GenerationSettings, ValidatorSettings))
ChatMLConfig.__doc__ = "theme_chatml run config: GenerationSettings and ValidatorSettings, plus max_chunks."


def build_generator(config: ChatMLConfig, llm_target: str = "") -> ChatMLGenerator:
    values = config.model_dump()
    settings = GenerationSettings(**{f.name: values[f.name] for f in dataclasses.fields(GenerationSettings)})
    checks = ValidatorSettings(**{f.name: values[f.name] for f in dataclasses.fields(ValidatorSettings)})
    return setup.build_generator(config_dir() / "theme", _out("chatml_work"), settings, checks, llm_target)


@dg.asset(group_name=GROUP, pool=model_pool(Loads.LLM), kinds={"jsonl"},
          description="Persona ChatML exchanges generated per kept chunk; resumable example by example.")
def theme_chatml(context: dg.AssetExecutionContext, theme_chunks: Path, config: ChatMLConfig, llm: LLMResource,
                 catalog: CatalogResource) -> dg.Output[Path]:
    generator = build_generator(config, llm_target=f"{llm.provider}|{llm.model}|{llm.base_url}|{llm.gguf}")
    chunks = (row for _, row in iter_jsonl(theme_chunks, on_error="raise"))
    selected, report = generator.run(chunks, llm.get_client(context), max_chunks=config.max_chunks,
                                     log=context.log.info)
    stats = report.as_dict()
    atomic_write_jsonl(_out("theme_chatml.rejects.jsonl"), generator.rejects())
    atomic_write_text(_out("theme_chatml.stats.json"), json.dumps(stats, indent=2))
    examples = generator.examples(selected)
    for failure in report.failures:
        context.log.error(f"FAILED {failure}")
    if report.chunks_failed and not examples:
        raise dg.Failure(
            f"{report.chunks_failed} chunks got no usable LLM reply and no example was kept "
            f"({report.failures[:3]})", metadata={"stats": dg.MetadataValue.json(stats)})
    if report.chunks_failed:
        # as the corpus does with a failed article: the rest is written, the failures are named (log, metadata,
        # the chunks_answered check) and, never journalled, they are asked again by the next materialization
        context.log.warning(f"{report.chunks_failed} of {report.chunks_selected} chunks got no usable LLM reply for "
                            f"some example; {len(examples)} examples written; materialize again to ask only for those")
    path = _out("theme_chatml.jsonl")
    atomic_write_jsonl(path, examples)
    catalog.get().record_run(kind="generate", name="theme_chatml", partition=None, run_id=context.run_id,
                             params=config.model_dump(), metrics=stats)
    return dg.Output(path, metadata={
        **inputs_meta(theme_config.generator_files(config_dir() / "theme")),
        "examples": len(examples), "chunks_processed": report.chunks_processed,
        "chunks_resumed": report.chunks_resumed, "chunks_skipped_too_short": report.chunks_too_short,
        "rejected_by_reason": dg.MetadataValue.json(stats["rejected_by_reason"]),
        "persona_distribution": dg.MetadataValue.json(stats["persona_distribution"]),
        "mean_response_chars": stats["mean_response_chars"],
        **llm_usage_meta(report.usage, llm.provider),
        "chunks_failed": report.chunks_failed,
        "failures": dg.MetadataValue.json(report.failures[:50]),
        "stats": dg.MetadataValue.json(stats), "checkpoint": str(generator.journal.path),
        "preview": chat_md(examples, n=3) if examples else dg.MetadataValue.md("(no examples kept)"),
    })


@dg.asset_check(asset=theme_chatml, description="Every selected chunk got a usable LLM reply for each of its examples "
                "(a warning otherwise: the failures are named and the next materialization asks only for them).")
def theme_chatml_every_chunk_answered(theme_chatml: Path) -> dg.AssetCheckResult:
    stats = json.loads(_out("theme_chatml.stats.json").read_text(encoding="utf-8"))
    return dg.AssetCheckResult(passed=stats["chunks_failed"] == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"chunks_failed": stats["chunks_failed"],
                                         "chunks_selected": stats["chunks_selected"],
                                         "failures": dg.MetadataValue.json(stats["failures"])})


class SplitConfig(dg.Config):
    train_ratio: float = 0.9
    seed: int = 42


@dg.multi_asset(group_name=GROUP, outs={"theme_chatml_train": dg.AssetOut(is_required=False, kinds={"jsonl"}),
                                        "theme_chatml_val": dg.AssetOut(is_required=False, kinds={"jsonl"})},
                can_subset=True,
                description="90/10 shuffle split (seed 42) of theme_chatml by the shared ChatML split rule.")
def theme_chatml_splits(context: dg.AssetExecutionContext, theme_chatml: Path, config: SplitConfig):
    """Both files are always written together (one seeded split); only the selected outputs are yielded."""
    # allow_empty_side: a one-example smoke run still materializes; the split checks flag the empty side
    res = chatml.build_split(read_jsonl(theme_chatml), train_path=_out("theme_chatml_train.jsonl"),
                             valid_path=_out("theme_chatml_val.jsonl"), meta_path=_out("theme_chatml_split.json"),
                             seed=config.seed, valid_fraction=1 - config.train_ratio, allow_empty_side=True)
    for name, path, rows in (("theme_chatml_train", res.train_path, res.train),
                             ("theme_chatml_val", res.valid_path, res.valid)):
        if name in context.op_execution_context.selected_output_names:
            if not rows:
                context.log.error(f"{name}: EMPTY: the split has no example (theme_chatml has {len(res.train) + len(res.valid)})")
            yield dg.Output(path, output_name=name, metadata={
                **({"status": f"EMPTY: no example in this split (theme_chatml kept "
                              f"{len(res.train) + len(res.valid)})"} if not rows else {}),
                "dagster/row_count": len(rows),
                "examples": len(rows), "train_ratio": config.train_ratio,
                "seed": dg.MetadataValue.text(str(config.seed)),  # a setting, not a measure: no plot
                "duplicates_removed": res.duplicates_removed, "split": dg.MetadataValue.json(res.info),
                "personas": dg.MetadataValue.json(dict(Counter(r["metadata"]["persona"] for r in rows))),
                "preview": chat_md(rows),
            })


def _split_verdict(mine: Path, sibling: str) -> dg.AssetCheckResult:
    verdict = chatml.check_split_file(mine, _out(f"{sibling}.jsonl"), max_seq=chatml.max_seq_for("theme"),
                                      count_tokens=chatml.embedded_token_counter(), required_metadata=("chunk_id",))
    return dg.AssetCheckResult(passed=verdict.passed,
                               metadata={**verdict.summary(), "tokenizer": chatml.EMBEDDED_TOKENIZER})


@dg.asset_check(asset="theme_chatml_train", description="system/user/assistant records with chunk ids; not empty; "
                "no duplicates; nothing also in the val split; token lengths vs the theme training max_seq.")
def theme_chatml_train_well_formed(theme_chatml_train: Path) -> dg.AssetCheckResult:
    return _split_verdict(theme_chatml_train, "theme_chatml_val")


@dg.asset_check(asset="theme_chatml_val", description="system/user/assistant records with chunk ids; not empty; "
                "no duplicates; nothing also in the train split; token lengths vs the theme training max_seq.")
def theme_chatml_val_well_formed(theme_chatml_val: Path) -> dg.AssetCheckResult:
    return _split_verdict(theme_chatml_val, "theme_chatml_train")


# -------------------------------------------------------------------------------------- model bench


class ModelBenchConfig(dg.Config):
    base_url: str = "http://localhost:1234/v1"
    api_key_env: str | None = None
    models: list[str] | None = None
    models_filter: list[str] | None = None
    evaluator_model: str | None = None
    max_tokens: int = 512


@dg.asset(group_name=GROUP, kinds={"python"}, description="Speed (tok/s, TTFT, time per response, hours per 1,000) and 1-5 quality "
          "of each model an OpenAI-compatible endpoint serves, on the real generator prompt.")
def theme_model_benchmark(theme_chunks: Path, config: ModelBenchConfig) -> dg.Output[Path]:
    generator = build_generator(ChatMLConfig(examples_per_chunk=1))
    chunk = next(row for _, row in iter_jsonl(theme_chunks, on_error="raise"))
    messages = generator.prompt_messages(chunk)
    settings = modelbench.BenchSettings(base_url=config.base_url, api_key_env=config.api_key_env, models=config.models,
                                        models_filter=config.models_filter, evaluator_model=config.evaluator_model,
                                        max_tokens=config.max_tokens)
    result = modelbench.run_benchmark(settings, messages)
    if not any(r["ok"] for r in result["ranked"]):
        raise dg.Failure(f"no model answered at {config.base_url}: {[r['error'] for r in result['ranked']]}")
    path = _out("theme_model_benchmark.json")
    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False))
    return dg.Output(path, metadata={**inputs_meta(theme_config.generator_files(config_dir() / "theme")),
                                     "ranking": dg.MetadataValue.md(modelbench.markdown_table(result)),
                                     "models": len(result["ranked"]),
                                     "prompt_chunk": dg.MetadataValue.text(str(chunk["chunk_id"]))})


# ----------------------------------------------------------------------------------------- wiring


# theme_lora / theme_gguf / theme_gguf_upload: the shared fine-tune chain (assets/finetune.py).
theme_finetune = finetune_chain(FinetuneChain(name="theme", train_asset="theme_chatml_train",
                                              val_asset="theme_chatml_val", group=GROUP, config_file="theme.yaml",
                                              lora_asset="theme_lora", gguf_asset="theme_gguf",
                                              upload_asset="theme_gguf_upload"))

defs = dg.Definitions(
    assets=[gutenberg_books, gutenberg_chunks, theme_chunks, theme_chatml, theme_chatml_splits,
            theme_model_benchmark, *theme_finetune],
    asset_checks=[gutenberg_books_valid, gutenberg_chunks_valid, theme_chunks_consistent,
                  theme_chatml_every_chunk_answered, theme_chatml_train_well_formed, theme_chatml_val_well_formed],
)
