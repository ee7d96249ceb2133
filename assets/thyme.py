"""Thyme (seed 002): language models trained from scratch, one static partition per experiment file
(``data/config/thyme/<name>.yaml``).

    thyme_corpus -> thyme_tokenizer -> thyme_dataset -> thyme_model -> thyme_eval -> thyme_upload
                                                                  \\-> thyme_gguf (the transformers)

Thin wiring over :mod:`distillery_assets.thyme`. Files live under ``<data>/thyme/<experiment>/``; each asset
writes its folder atomically, registers it in the catalogue (``register_files``: the upstream asset's
artefact of the same partition, the experiment file and the shipped books as inputs) and returns a
``MaterializeResult``. Training goes through the ``compute`` resource (``TrainThymeSpec``); in process its
progress lines (step, loss, tokens/s, ETA) and "resuming from step N" reach the Dagster log.

The ``distillery`` experiment reads the platform's own documents: the ``.corpus`` files of
``story_corpus`` / ``encyclopedia_corpus`` and ``theme_chunks``. ``theme_chunks`` is unpartitioned, so it is
a real Dagster dependency of ``thyme_corpus`` (when some experiment reads it; like the filters' chunk sources,
``*thyme_eval`` then rebuilds the local theme chain, which calls no LLM, for every experiment). The corpus
assets are not: they are partitioned otherwise, ``*thyme_eval`` would select them whatever the partition
mapping, and one run holds one partitions definition (``JobDefinition._get_partitions_def`` fails with "no
PartitionsDefinition shared by all the provided assets"); besides, a dependency holds for every partition,
so ``--partition books-cpu`` would generate the LLM corpus first. The catalogue records those edges file by
file, so ``python -m distillery_assets.catalog lineage thyme_model`` reaches the prompts.txt files;
``thyme_corpus``'s page names the corpus partitions it read, linked to their pages (``read story_corpus``,
``corpus_partitions_read``); and the asset fails with the assets to materialize first when those
documents do not exist yet.
"""


import json
from pathlib import Path

import dagster as dg

from assets.corpus import corpus_read_meta
from assets.logs import forward_logs
from assets.meta import path_md, require_upstream, size, table_md, text_md
from assets.pools import Loads, model_pool
from distillery_assets.catalog import InputRef
from distillery_assets.corpus.layout import CORPUS_SUFFIX, CorpusKind, corpus_root
from distillery_assets.markdown import fit_md, human_size
from distillery_assets.partitions import asset_url, thyme_experiment_partitions
from distillery_assets.paths import data_dir, inputs_dir, repo_root
from distillery_assets.thyme import corpus as thyme_corpus_lib
from distillery_assets.thyme.dataset import (TOKENIZER_INFO, build_dataset, build_tokenizer, existing_dataset,
                                             existing_tokenizer, open_dataset)
from distillery_assets.thyme.export import EXPORT_RECORD
from distillery_assets.thyme.experiments import (Experiment, ExperimentError, LlamaArchitecture, LocalSource,
                                                 PlatformSource, experiment_names, experiment_path, load_experiment)
from distillery_assets.thyme.report import (PLOT_FILE, SAMPLES_FILE, curves_inline_md, eval_table_md,
                                            evaluate_experiment, model_card_markdown, samples_md)
from distillery_assets.thyme.steps import TrainThymeSpec
from distillery_assets.thyme.tokenizer import TOKENIZER_FILE
from io_managers.register import register_files
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource, record_upload

GROUP = "thyme"
OOD_BOOK = "thyme_ood/pg2434.txt"  # Bacon's New Atlantis: in no experiment's corpus (thyme books, theme books)
CORPUS_ASSETS = {CorpusKind.STORIES: "story_corpus", CorpusKind.ENCYCLOPEDIA: "encyclopedia_corpus"}
FORWARDED_LOGGERS = ("distillery_assets.thyme", "distillery_assets.training.loop", "distillery_assets.threads")
FINISHED_CHECK, UNIGRAM_CHECK, TOKENS_CHECK = "training_finished", "below_unigram_baseline", "eval_on_enough_tokens"
MIN_EVAL_TOKENS = 10_000
"""Validation tokens under which a perplexity is too noisy to compare models (a warning)."""


# ----------------------------------------------------------------------------------------- helpers

def _experiment(context: dg.AssetExecutionContext) -> Experiment:
    return load_experiment(context.partition_key)


def _folder(exp: Experiment, part: str) -> Path:
    return data_dir() / "thyme" / exp.name / part


def _rel(path: Path) -> str:
    return Path(path).resolve().relative_to(data_dir()).as_posix()


def _source_files(exp: Experiment) -> list[Path]:
    """The edited files an experiment reads directly: its YAML and the shipped books it names."""
    files = [experiment_path(exp.name)]
    for src in exp.corpus.sources:
        if isinstance(src, LocalSource):
            folder = Path(src.path) if Path(src.path).is_absolute() else repo_root() / src.path
            books = sorted(folder.glob("*.txt"))
            files += [p for p in books if src.files is None or p.name in src.files]
    return files


def _dagster_log(context: dg.AssetExecutionContext):
    """The thyme library's and the training loop's log lines (progress, resume, checkpoints, the spare cores
    taken and given back) in the run's log."""
    return forward_logs(context, FORWARDED_LOGGERS)


# ------------------------------------------------------------------------------------------ corpus

def _platform_readers() -> dict[str, list[str]]:
    """``{experiment: platform assets it reads}`` over the experiment files (one that does not load reads
    nothing here; it fails when its own partition runs)."""
    readers = {}
    for name in experiment_names():
        try:
            exp = load_experiment(name)
        except (ExperimentError, ValueError):
            continue
        assets = sorted({a for src in exp.corpus.sources if isinstance(src, PlatformSource) for a in src.assets})
        if assets:
            readers[name] = assets
    return readers


_READERS = _platform_readers()
CHUNK_DEPS = sorted({a for assets in _READERS.values() for a in assets} & {"theme_chunks"})
"""Unpartitioned platform assets some experiment reads: real Dagster dependencies of ``thyme_corpus``."""


def _catalogue_upstream() -> dg.MetadataValue:
    """Definition metadata: the experiments reading the (partitioned) corpus, linked, and why it is no edge."""
    links = ", ".join(f"[{a}]({asset_url(a)})" for a in CORPUS_ASSETS.values())
    readers = [name for name, assets in _READERS.items() if "corpus" in assets]
    if not readers:
        return dg.MetadataValue.md("No experiment reads the corpus pipeline's documents.")
    return dg.MetadataValue.md(
        f"{'Experiment' if len(readers) == 1 else 'Experiments'} {', '.join(f'`{r}`' for r in readers)} "
        f"{'reads' if len(readers) == 1 else 'read'} every partition of {links} through the catalogue, "
        "not a Dagster edge: the corpus is partitioned otherwise and one run holds one partitions definition. "
        "Each materialization lists the corpus partitions it read.")


def _platform_paths(exp: Experiment, catalog) -> tuple[dict[str, list[Path]], list[InputRef]]:
    """The platform documents a ``platform`` source reads, and the catalogue inputs naming their assets."""
    wanted = {a for src in exp.corpus.sources if isinstance(src, PlatformSource) for a in src.assets}
    paths: dict[str, list[Path]] = {}
    refs: list[InputRef] = []
    if "corpus" in wanted:
        root = corpus_root()
        for kind, asset in CORPUS_ASSETS.items():
            files = sorted((root / kind.value).rglob(f"*{CORPUS_SUFFIX}")) if (root / kind.value).is_dir() else []
            paths.setdefault("corpus", []).extend(files)
            refs += [InputRef(f, asset) for f in files]
        if not paths.get("corpus"):
            raise dg.Failure(
                f"experiment {exp.name}: no .corpus files under {root}; materialize the corpus pipeline first "
                "(story_prompts -> story_corpus and/or encyclopedia_prompts -> encyclopedia_corpus)")
    if "theme_chunks" in wanted:
        row = catalog.latest_artifact("theme_chunks", None)
        path = catalog.absolute(row["path"]) if row else None
        if path is None or not path.exists():
            raise dg.Failure(f"experiment {exp.name}: theme_chunks has no file yet; materialize "
                             "gutenberg_books -> gutenberg_chunks -> theme_chunks first")
        paths["theme_chunks"] = [path]
        refs.append(InputRef(path, "theme_chunks"))
    return paths, refs


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=CHUNK_DEPS, kinds={"python"},
          metadata={"catalogue_upstream": _catalogue_upstream()},
          description="The experiment's documents: local books, the platform's own corpus and theme chunks, or the "
                      "Hub's Gutenberg/Wikipedia streams; cleaned as the seed did, every drop logged with its reason.")
def thyme_corpus(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    exp, cat = _experiment(context), catalog.get()
    platform, platform_refs = _platform_paths(exp, cat)
    folder = _folder(exp, "corpus")
    key = thyme_corpus_lib.source_key(exp.corpus, platform_paths=platform)
    stats = thyme_corpus_lib.existing_corpus(folder, key)
    reused = stats is not None
    if reused:
        drops = thyme_corpus_lib.read_drops(folder)
        context.log.info(f"{folder}: built from the same files and settings (source key {key}); reused")
    else:
        drops = []

        def on_drop(drop) -> None:
            drops.append(drop)
            context.log.warning(f"dropped {drop.source}: {drop.reason}")

        items = thyme_corpus_lib.iter_sources(exp.corpus, platform_paths=platform)
        try:
            stats = thyme_corpus_lib.write_corpus(items, folder, on_drop=on_drop, key=key)
        except thyme_corpus_lib.CorpusError as exc:
            raise dg.Failure(f"experiment {exp.name} ({experiment_path(exp.name)}): {exc}") from exc
    meta = register_files(context, cat, [folder], [*_source_files(exp), *platform_refs])
    return dg.MaterializeResult(metadata={
        **meta, "reused": reused, "source_key": key, "documents": stats.documents, "characters": stats.characters,
        "text_size": human_size(stats.bytes), "dropped": stats.dropped, "by_source": dg.MetadataValue.json(stats.by_source),
        "drops": table_md([(d.source, d.reason) for d in drops[:50]], ["source", "reason"]) if drops else "none",
        "experiment_file": path_md(experiment_path(exp.name)), **_corpus_read(platform_refs),
    })


def _corpus_read(refs: list[InputRef]) -> dict:
    """Which partitions of which corpus asset the experiment read (empty when it reads no corpus), linked."""
    corpus = [r.path for r in refs if r.asset_key in CORPUS_ASSETS.values()]
    return corpus_read_meta(corpus, assets=list(CORPUS_ASSETS.values())) if corpus else {}


# ---------------------------------------------------------------------------------------- tokenizer

def _texts(exp: Experiment):
    return (d.text for d in thyme_corpus_lib.read_corpus(require_upstream(_folder(exp, "corpus"), "corpus", "thyme_corpus")))


def _text_sha(exp: Experiment) -> str:
    """The digest of the corpus's joined texts (what the tokenizer and the dataset are made from)."""
    return thyme_corpus_lib.corpus_stats(require_upstream(_folder(exp, "corpus"), "corpus", "thyme_corpus")).text_sha256


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=[thyme_corpus], kinds={"python"},
          description="BPE tokenizer (<PAD> <UNK> <BOS> <EOS> = 0-3) trained on the training chunks only "
                      "(tokenizer.train_on: all is the seed's leak), saved as tokenizer.json.")
def thyme_tokenizer(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    exp = _experiment(context)
    folder = _folder(exp, "tokenizer")
    info = existing_tokenizer(folder, exp, _text_sha(exp))
    reused = info is not None
    if reused:
        context.log.info(f"{folder}: trained on the same texts with the same settings; reused")
    else:
        info = build_tokenizer(_texts(exp), exp, folder)
    meta = register_files(context, catalog.get(), [folder / TOKENIZER_FILE], [experiment_path(exp.name)])
    return dg.MaterializeResult(metadata={
        **meta, "reused": reused, "vocab_size": info["vocab_size"], "requested_vocab_size": info["requested_vocab_size"],
        "trained_on": info["trained_on"], "training_chunks": info["training_chunks"],
        "chunks": info["chunks"], "train_chunks": info["train_chunks"], "val_chunks": info["val_chunks"],
    })


# ------------------------------------------------------------------------------------------ dataset

def _chunking(exp: Experiment) -> str:
    """The packing rule in words, as the dataset's page shows it beside the counts."""
    d = exp.dataset
    floor = f"chunks of {d.min_chunk_chars} characters or fewer dropped" if d.min_chunk_chars else "no chunk dropped"
    return (f"the seed's create_chunks: paragraphs joined by one space while len(chunk) + len(paragraph) < "
            f"{d.chunk_chars} (the space not counted); {floor}; split {1 - d.val_fraction:.0%}/{d.val_fraction:.0%} "
            f"by chunk, np.random.seed({d.split_seed}) shuffle")


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=[thyme_corpus, thyme_tokenizer],
          kinds={"numpy"},
          description="Chunks split 90/10 by chunk as the seed (np.random.seed(42) shuffle), tokenized once into "
                      "memory-mapped token arrays with the seed's windows and covering windows.")
def thyme_dataset(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    exp = _experiment(context)
    tokenizer = require_upstream(_folder(exp, "tokenizer") / TOKENIZER_FILE, "tokenizer", "thyme_tokenizer")
    folder = _folder(exp, "dataset")
    ds = existing_dataset(folder, exp, _text_sha(exp), tokenizer=tokenizer)
    reused = ds is not None
    if reused:
        context.log.info(f"{folder}: made from the same texts, settings and tokenizer; reused")
    else:
        ds = build_dataset(_texts(exp), exp, folder, tokenizer=tokenizer)
    meta = register_files(context, catalog.get(), [folder], [experiment_path(exp.name)])
    rows = [(name, f"{ds.info[name]['chunks']:,}", f"{ds.info[name]['tokens']:,}", f"{ds.info[name]['windows']:,}",
             human_size(ds.info[name]["text_bytes"])) for name in ("train", "val")]
    return dg.MaterializeResult(metadata={
        **meta, "reused": reused, "fingerprint": ds.info["fingerprint"], "chunks": ds.info["chunks"],
        "chunking": _chunking(exp), "train_chunks": ds.info["train"]["chunks"],
        "val_chunks": ds.info["val"]["chunks"], "train_tokens": ds.info["train"]["tokens"],
        "val_tokens": ds.info["val"]["tokens"], "train_windows": ds.info["train"]["windows"],
        "steps_per_epoch": -(-ds.info["train"]["windows"] // exp.training.batch_size),
        "vocab_size": ds.vocab_size, "splits": table_md(rows, ["split", "chunks", "tokens", "windows", "text size"]),
    })


# -------------------------------------------------------------------------------------------- model

def _finished_check(exp: Experiment, results: dict) -> dg.AssetCheckResult:
    """From the training results in hand: every model ran all its epochs (or its max_steps, or stopped by its
    patience) and its best validation loss is a number."""
    rows, ok = [], True
    for key, r in results.items():
        t = exp.training_for(key)
        done = bool(t.max_steps and r.steps >= t.max_steps) or len(r.epochs) >= t.epochs or bool(r.stopped_early)
        finite = r.best_val_loss is not None and r.best_val_loss == r.best_val_loss and r.best_val_loss != float("inf")
        ok = ok and done and finite
        stop = (f" (stopped by patience {r.stopped_early['patience']}; best epoch {r.stopped_early['best_epoch']})"
                if r.stopped_early else "")
        rows.append((key, f"{len(r.epochs)} of {t.epochs}{stop}", f"{r.steps:,}" + (f" of {t.max_steps:,}" if t.max_steps else ""),
                     "" if r.best_val_loss is None else round(r.best_val_loss, 4), "yes" if done and finite else "no"))
    return dg.AssetCheckResult(check_name=FINISHED_CHECK, passed=ok, metadata={
        "models": table_md(rows, ["model", "epochs", "steps", "best val loss", "finished"])})


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=[thyme_dataset], kinds={"pytorch"},
          pool=model_pool(Loads.COMPUTE),
          check_specs=[dg.AssetCheckSpec(FINISHED_CHECK, asset="thyme_model", description=(
              "Every model of the experiment ran all its configured epochs (or reached max_steps, or was stopped by "
              "its patience) and ended with a finite validation loss."))],
          description="Each model of the experiment (ThymeLM and/or the Llama-style transformer) trained from scratch "
                      "through the compute resource: latest/ every N steps (resumed after a kill), best/ by validation "
                      "loss, training_history.json; a finished run is reused, not retrained.")
def thyme_model(context: dg.AssetExecutionContext, compute: ComputeResource,
                catalog: CatalogResource) -> dg.MaterializeResult:
    exp, cat = _experiment(context), catalog.get()
    dataset_dir = require_upstream(_folder(exp, "dataset"), "dataset", "thyme_dataset")
    results, ran_on = {}, {}
    for key in exp.models:
        out = _folder(exp, "models") / key
        spec = TrainThymeSpec(experiment=exp, model_key=key, dataset_dir=_rel(dataset_dir), out_dir=_rel(out))
        context.log.info(f"{exp.name}/{key}: {exp.models[key].architecture} on the {compute.backend} backend "
                         "(reused if a finished run has the same fingerprint, else trained or resumed)")
        with _dagster_log(context):
            result = compute.run_step(spec)
        results[key], ran_on[key] = result, compute.ran_on(result.device)
        if result.reused:
            context.log.info(f"{exp.name}/{key}: finished run reused (fingerprint {result.fingerprint}); nothing trained")
        else:
            cat.record_run(kind="train", name=f"thyme_model/{key}", partition=exp.name, run_id=context.run_id,
                           params={"experiment": exp.name, "model": exp.models[key].model_dump(),
                                   "training": exp.training_for(key).model_dump()},
                           metrics=result.model_dump(mode="json", exclude={"epochs"}) | {"ran_on": ran_on[key]})
    folder = _folder(exp, "models")
    meta = register_files(context, cat, [folder], [experiment_path(exp.name)])
    rows = [(k, r.architecture, f"{r.parameters:,}", r.steps, r.best_epoch,
             round(r.best_val_loss, 4) if r.best_val_loss is not None else "",
             round(r.best_seed_ppl, 2) if r.best_seed_ppl is not None else "", round(r.tokens_per_s),
             r.resumed_from_step, "yes" if r.reused else "no", ran_on[k]) for k, r in results.items()]
    epochs = [(k, e["epoch"], round(e["train_loss"], 4), round(e["val_loss"], 4), round(e["val_ppl"], 2),
               round(e.get("seed_ppl") or 0, 2), f"{e['lr']:.2e}", round(e["tokens_per_s"]))
              for k, r in results.items() for e in r.epochs]
    return dg.MaterializeResult(metadata={
        **meta, "ran_on": ", ".join(sorted(set(ran_on.values()))),
        "reused_finished_runs": sum(r.reused for r in results.values()),
        "trained_models": sum(not r.reused for r in results.values()),
        "models": table_md(rows, ["model", "architecture", "parameters", "steps", "best epoch", "best val loss",
                                  "best seed ppl", "tok/s", "resumed from step", "reused", "ran on"]),
        "epochs": table_md(epochs, ["model", "epoch", "train loss", "val loss", "val ppl", "seed ppl", "lr", "tok/s"]),
        "train_seconds": round(sum(r.train_seconds for r in results.values() if not r.reused), 1),
        "models_size": size(folder),
    }, check_results=[_finished_check(exp, results)])


# --------------------------------------------------------------------------------------------- eval

def _model_folders(exp: Experiment) -> dict[str, Path]:
    return {key: require_upstream(_folder(exp, "models") / key / "model.json", f"trained model {key}", "thyme_model").parent
            for key in exp.models}


def _eval_checks(rows: list[dict], val: dict) -> list[dg.AssetCheckResult]:
    """From the evaluation in hand: every trained model's perplexity below the unigram baseline's (an error:
    a model no better than word frequencies learned nothing), and enough validation tokens scored (a warning)."""
    unigram = next(r for r in rows if r["model"] == "unigram")
    models = [r for r in rows if r["kind"] != "baseline"]
    table = table_md([(r["model"], round(r["ppl"], 2), round(unigram["ppl"], 2), "yes" if r["ppl"] < unigram["ppl"] else "no")
                      for r in models], ["model", "ppl", "unigram ppl", "below"])
    tokens = min((int(r["scored_tokens"]) for r in rows), default=0)
    return [
        dg.AssetCheckResult(check_name=UNIGRAM_CHECK, passed=all(r["ppl"] < unigram["ppl"] for r in models),
                            metadata={"models": table, "unigram_ppl": round(unigram["ppl"], 3)}),
        dg.AssetCheckResult(check_name=TOKENS_CHECK, passed=tokens >= MIN_EVAL_TOKENS,
                            severity=dg.AssetCheckSeverity.WARN,
                            metadata={"validation_tokens_scored": tokens, "minimum": MIN_EVAL_TOKENS,
                                      "validation_chunks": int(val.get("chunks", 0))}),
    ]


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=[thyme_model, thyme_dataset],
          kinds={"pytorch"}, pool=model_pool(Loads.ALWAYS),
          check_specs=[
              dg.AssetCheckSpec(UNIGRAM_CHECK, asset="thyme_eval", description=(
                  "Every trained model's validation perplexity is below the unigram baseline's (same split, same "
                  "tokenizer): a model no better than word frequencies learned nothing.")),
              dg.AssetCheckSpec(TOKENS_CHECK, asset="thyme_eval", description=(
                  f"The perplexities were measured on at least {MIN_EVAL_TOKENS:,} validation tokens (a warning: fewer "
                  "make differences between models noise)."))],
          description="The seed's metric, token-weighted perplexity and bits per byte on validation, bits per byte on "
                      "an out-of-domain book, unigram and 3-gram baselines in the same table, samples for the seed's "
                      "five prompts (top-k 50, top-p 0.9), loss/perplexity curves; one runs row per experiment.")
def thyme_eval(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    exp, cat = _experiment(context), catalog.get()
    dataset = open_dataset(require_upstream(_folder(exp, "dataset"), "dataset", "thyme_dataset"))
    models, ood = _model_folders(exp), inputs_dir() / OOD_BOOK
    out = _folder(exp, "eval")
    with _dagster_log(context):
        report = evaluate_experiment(exp, dataset, models, ood, out)
    data = report.data
    if not report.reused:
        metrics = {f"{r['model']}.{m}": r[m] for r in data["rows"] for m in ("seed_ppl", "ppl", "bpb", "ood_bpb")}
        cat.record_run(kind="eval", name="thyme_eval", partition=exp.name, run_id=context.run_id,
                       params={"experiment": exp.name, "fingerprint": exp.fingerprint(), "ood_book": OOD_BOOK,
                               "models": {k: m.architecture for k, m in exp.models.items()}},
                       metrics=metrics | {"seed_ppl_per_epoch": data["seed_ppl_per_epoch"],
                                          "seed_reported_ppl": data["seed_reported_ppl"]})
    histories = {k: json.loads((f / "training_history.json").read_text(encoding="utf-8")) for k, f in models.items()}
    samples = json.loads((out / SAMPLES_FILE).read_text(encoding="utf-8"))
    meta = register_files(context, cat, [out], [ood, experiment_path(exp.name)])
    unigram = next(r for r in data["rows"] if r["model"] == "unigram")
    return dg.MaterializeResult(metadata={
        **meta, "reused": report.reused, "table": dg.MetadataValue.md(eval_table_md(data["rows"])),
        "curves": dg.MetadataValue.md(curves_inline_md(histories, data["rows"])),
        "curves_png": path_md(out / PLOT_FILE),
        "samples": dg.MetadataValue.md(fit_md(lambda chars: samples_md(samples, chars), (300, 160, 100, 60, 30))),
        "samples_file": path_md(out / SAMPLES_FILE),
        "below_unigram": dg.MetadataValue.json({r["model"]: r["ppl"] < unigram["ppl"]
                                                for r in data["rows"] if r["kind"] != "baseline"}),
        "seed_ppl_per_epoch": dg.MetadataValue.json({k: [None if p is None else round(p, 2) for p in v]
                                                     for k, v in data["seed_ppl_per_epoch"].items()}),
        "seed_reported_ppl": data["seed_reported_ppl"], "ood_book": data["ood"]["book"],
        **{f"{r['model']}_ppl": round(r["ppl"], 3) for r in data["rows"]},
        **{f"{r['model']}_bpb": round(r["bpb"], 4) for r in data["rows"]},
    }, check_results=_eval_checks(data["rows"], data.get("val") or {}))


# --------------------------------------------------------------------------------------------- gguf

@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions, deps=[thyme_model, thyme_tokenizer],
          kinds={"gguf"}, pool=model_pool(Loads.ALWAYS),
          description="Each Llama-style transformer of the experiment exported to GGUF (Q8_0) with the project's GGUF "
                      "path, checked in llama.cpp (same tokens, logits against torch) and continuing a prompt. "
                      "ThymeLM has no GGUF form; an experiment without a transformer exports nothing.")
def thyme_gguf(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.thyme.export import export_once

    exp = _experiment(context)
    keys = [k for k, a in exp.models.items() if isinstance(a, LlamaArchitecture)]
    if not keys:
        return dg.MaterializeResult(metadata={"exported": "nothing: the experiment has no transformer "
                                                          "(ThymeLM has no GGUF form)"})
    tokenizer = require_upstream(_folder(exp, "tokenizer") / TOKENIZER_FILE, "tokenizer", "thyme_tokenizer")
    rows, paths = [], []
    for key in keys:
        model_dir = require_upstream(_folder(exp, "models") / key / "model.json", f"trained model {key}", "thyme_model").parent
        with _dagster_log(context):  # reused only if it is this model's and this exporter's
            result, reused = export_once(model_dir, tokenizer, _folder(exp, "gguf") / key)
        paths.append(Path(result.gguf_path))
        rows.append((key, Path(result.gguf_path).name, result.quant, human_size(result.gguf_bytes),
                     result.llama_tokenize_matches, f"{result.logits_max_abs_diff:.2e}", round(result.top1_agreement, 3),
                     "yes" if reused else "no"))
        context.log.info(f"{exp.name}/{key}: llama.cpp continues {result.prompt!r} with {result.sample_text[:200]!r}")
    meta = register_files(context, catalog.get(), paths, [experiment_path(exp.name)])
    return dg.MaterializeResult(metadata={
        **meta, "ran_on": "local CPU (in process)",
        "exports": table_md(rows, ["model", "file", "quant", "size", "llama.cpp tokens match", "max |logit diff|",
                                   "top-1 agreement", "reused"]),
        "llama_cpp_sample": text_md(f"{result.prompt} … {result.sample_text}"),
    })


# ------------------------------------------------------------------------------------------- upload

class ThymeUploadConfig(dg.Config):
    hub_repo_id: str | None = None
    """Hub repository; empty: ``distillery-thyme-<experiment>`` under the token's namespace."""


@dg.asset(group_name=GROUP, partitions_def=thyme_experiment_partitions,
          deps=[thyme_eval, thyme_model, thyme_tokenizer, thyme_corpus, thyme_gguf], kinds={"huggingface"},
          description="The experiment's models, tokenizer, history, evaluation and each transformer's GGUF with a model "
                      "card (data, tokenizer, architecture, metrics, perplexity table vs baselines), private by default. "
                      "Without HF_TOKEN: uploads nothing and says why.")
def thyme_upload(context: dg.AssetExecutionContext, config: ThymeUploadConfig, hub: HubResource,
                 catalog: CatalogResource) -> dg.MaterializeResult:
    import shutil

    from distillery_assets.io import atomic_path, atomic_write_text

    exp = _experiment(context)
    report = json.loads(require_upstream(_folder(exp, "eval") / "eval.json", "evaluation", "thyme_eval").read_text())
    models = {k: json.loads((f / "model.json").read_text()) for k, f in _model_folders(exp).items()}
    corpus_stats = json.loads((_folder(exp, "corpus") / thyme_corpus_lib.CORPUS_MANIFEST).read_text())
    tokenizer_info = json.loads((_folder(exp, "tokenizer") / TOKENIZER_INFO).read_text())
    ggufs = {k: json.loads(require_upstream(_folder(exp, "gguf") / k / EXPORT_RECORD, f"GGUF export of {k}",
                                    "thyme_gguf").read_text())
             for k, a in exp.models.items() if isinstance(a, LlamaArchitecture)}
    repo_id = config.hub_repo_id or f"distillery-thyme-{exp.name}"
    card = model_card_markdown(exp, report, models, corpus_stats, tokenizer_info, repo_id=hub.full_repo_id(repo_id),
                               ggufs=ggufs)
    staging = _folder(exp, "upload")
    with atomic_path(staging, is_dir=True) as tmp:
        shutil.copy2(_folder(exp, "tokenizer") / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        for key in models:
            src, dst = _folder(exp, "models") / key, tmp / key
            dst.mkdir()
            for name in ("model.pt", "model.json", "training_history.json"):
                shutil.copy2(src / name, dst / name)
            if key in ggufs:
                gguf_file = require_upstream(Path(ggufs[key]["gguf_path"]), f"GGUF of {key}", "thyme_gguf")
                shutil.copy2(gguf_file, dst / gguf_file.name)
                shutil.copy2(_folder(exp, "gguf") / key / EXPORT_RECORD, dst / EXPORT_RECORD)
        for name in ("eval.json", SAMPLES_FILE, PLOT_FILE):
            shutil.copy2(_folder(exp, "eval") / name, tmp / name)
        atomic_write_text(tmp / "README.md", card)
    result = hub.upload_folder(staging, repo_id, repo_type="model", card_markdown=card)
    if not result.get("uploaded") and not result.get("skipped"):
        context.log.warning(f"{exp.name}: not uploaded to the Hub ({result.get('reason')}); staged in {_rel(staging)}")
    meta = register_files(context, catalog.get(), [staging], [experiment_path(exp.name)])
    return dg.MaterializeResult(metadata={
        **meta, **record_upload(context, catalog.get(), result), "model_card": dg.MetadataValue.md(card),
        "files": len(result.get("files") or []),
        "gguf": ", ".join(f"{k}/{Path(g['gguf_path']).name}" for k, g in ggufs.items()) or "none",
        "gguf_note": ("ThymeLM has no GGUF form (no llama.cpp architecture has its state update)"
                      if any(not isinstance(a, LlamaArchitecture) for a in exp.models.values()) else ""),
    })


ASSETS = [thyme_corpus, thyme_tokenizer, thyme_dataset, thyme_model, thyme_eval, thyme_upload, thyme_gguf]
defs = dg.Definitions(assets=ASSETS)
