"""An experiment's evaluation and what people read of it: the perplexity table (models and baselines on
the same split and tokenizer, plus bits per byte on an out-of-domain book), samples for the seed's
prompts, the loss/perplexity plot and the model card.

:func:`evaluate_experiment` writes ``eval.json`` (every number), ``samples.json`` and ``curves.png`` into
one folder that appears only when complete; a second call with the same models, dataset and book finds
``eval.json`` with the same fingerprint and returns it with ``reused=True``.

Samples: top-k 50, top-p 0.9 (the seed's sampler, :func:`~distillery_assets.thyme.model.sample_next`),
the same sampler for both architectures; ThymeLM generates with its constant-state step form, the
transformer re-reads its context (up to its position limit) every token. Each prompt is encoded with a
leading ``<BOS>``, as training chunks start. The continuation is shown as its tokens joined by spaces:
the Whitespace pre-tokenizer keeps no record of where the spaces were, so a word split into pieces shows
with spaces inside it.

The out-of-domain book is scored on its first ``ood_max_chars`` characters after cleaning (default
30,000: enough for a stable bits-per-byte figure, small enough for the CPU profile).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.io.hashing import json_fingerprint, sha256_file
from distillery_assets.markdown import md_table
from distillery_assets.thyme.corpus import clean_book, decode_text_file
from distillery_assets.thyme.dataset import Dataset, chunk_text, split_from_chunks
from distillery_assets.thyme.experiments import Experiment
from distillery_assets.thyme.tokenizer import BOS_ID, EOS_ID

log = logging.getLogger(__name__)

SEED_PROMPTS = ("It is a truth universally acknowledged", "Call me Ishmael", "It was the best of times",
                "The night was dark", "She looked at him")
TOP_K, TOP_P = 50, 0.9
EVAL_FILE, SAMPLES_FILE, PLOT_FILE = "eval.json", "samples.json", "curves.png"
SEED_REPORTED_PPL = 57.1  # seed 002's published validation perplexity (books config, eight books)


class EvalError(ValueError):
    """An evaluation that cannot run (a model folder missing, an unreadable out-of-domain book)."""


# ------------------------------------------------------------------------------------------- samples

def sample(model, tok, prompt: str, *, max_new_tokens: int = 60, seed: int = 0, top_k: int = TOP_K,
           top_p: float = TOP_P) -> str:
    """One continuation of ``prompt`` (the decoded new tokens), sampled with top-k then top-p."""
    import torch

    from distillery_assets.thyme.model import ThymeLM, sample_next

    ids = [BOS_ID, *tok.encode(prompt, add_special_tokens=False).ids]
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    if isinstance(model, ThymeLM):
        new = model.generate(ids, max_new_tokens, top_k=top_k, top_p=top_p, eos_id=EOS_ID, generator=gen)
    else:
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        context, new = list(ids), []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                window = torch.tensor([context[-limit:]])
                logits = model(input_ids=window, attention_mask=torch.ones_like(window)).logits[0, -1]
                nxt = sample_next(logits, top_k=top_k, top_p=top_p, generator=gen)
                new.append(nxt)
                if nxt == EOS_ID:
                    break
                context.append(nxt)
    return " ".join(tok.id_to_token(t) for t in new if t != EOS_ID)


# ---------------------------------------------------------------------------------------- evaluation

def read_ood_book(path: Path) -> str:
    """The out-of-domain book, cleaned as every book is (errors name the file)."""
    try:
        return clean_book(decode_text_file(Path(path)))
    except (OSError, ValueError) as exc:
        raise EvalError(f"{path}: out-of-domain book unusable: {exc}") from None


def _fingerprint(dataset: Dataset, models: dict[str, Path], ood: Path, batch_size: int, max_new_tokens) -> str:
    body = {"dataset": dataset.info["fingerprint"], "ood": sha256_file(ood), "batch": batch_size,
            "samples": [SEED_PROMPTS, TOP_K, TOP_P, max_new_tokens],
            "models": {k: json.loads((Path(f) / "model.json").read_text(encoding="utf-8"))["fingerprint"]
                       for k, f in sorted(models.items())}}
    return json_fingerprint(body)


@dataclass
class EvalReport:
    folder: Path
    data: dict[str, Any]
    reused: bool

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]


def evaluate_experiment(exp: Experiment, dataset: Dataset, models: dict[str, Path], ood_book: Path, out: Path, *,
                        weights: str = "best", max_new_tokens: int = 60,
                        ood_max_chars: int | None = 30_000) -> EvalReport:
    """Every model of ``models`` (key -> run folder) and the baselines on the validation split, bits per
    byte on ``ood_book`` for all of them, samples for the seed's prompts, the curves plot."""
    from distillery_assets.thyme.evaluate import NGram, evaluate, neural_scorer
    from distillery_assets.thyme.train import load_model

    out = Path(out)
    missing = [k for k, f in models.items() if not (Path(f) / "model.json").exists()]
    if missing:
        raise EvalError(f"models not trained yet: {', '.join(missing)} (no model.json under {out.parent})")
    batch = exp.training.eval_batch_size or exp.training.batch_size
    fingerprint = _fingerprint(dataset, models, ood_book, batch, [max_new_tokens, ood_max_chars])
    try:
        done = json.loads((out / EVAL_FILE).read_text(encoding="utf-8"))
        if done.get("fingerprint") == fingerprint:
            log.info("%s: evaluation with the same models, data and book is in %s; reused", exp.name, out)
            return EvalReport(out, done, reused=True)
    except (FileNotFoundError, ValueError):
        pass

    tok = dataset.tokenizer()
    ood_text = read_ood_book(ood_book)[:ood_max_chars]
    ood = split_from_chunks("ood", tok, chunk_text(ood_text, exp.dataset.chunk_chars, exp.dataset.min_chunk_chars),
                            exp.dataset)
    rows, samples, histories = [], {}, {}
    unigram, ngram = NGram(dataset.train, dataset.vocab_size, order=1), NGram(dataset.train, dataset.vocab_size)
    scorers = {"unigram": ("baseline", unigram.scorer(), None), "3-gram": ("baseline", ngram.scorer(), None)}
    for key, folder in models.items():
        info = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        model = load_model(folder, weights=weights if (Path(folder) / "best").is_dir() else "final")
        scorers[key] = (info["architecture"], neural_scorer(model), (model, info))
        histories[key] = json.loads((Path(folder) / "training_history.json").read_text(encoding="utf-8"))
    for name, (kind, scorer, held) in scorers.items():
        val_row = evaluate(name, scorer, dataset.val, batch_size=batch)
        ood_row = evaluate(name, scorer, ood, batch_size=batch)
        row = {"model": name, "kind": kind, **{k: v for k, v in val_row.to_dict().items() if k != "model"},
               "ood_bpb": ood_row.bpb, "ood_ppl": ood_row.ppl, "ood_tokens": ood_row.scored_tokens}
        if held is not None:
            model, info = held
            row.update(parameters=info["parameters"], best_epoch=info.get("best_epoch"), steps=info["steps"],
                       tokens_per_s=info["tokens_per_s"], device=info["device"])
            samples[name] = [{"prompt": p, "continuation": sample(model, tok, p, max_new_tokens=max_new_tokens,
                                                                  seed=i)} for i, p in enumerate(SEED_PROMPTS)]
        rows.append(row)
        log.info("%s %s: seed ppl %.2f, ppl %.2f, %.3f bits/byte (out of domain %.3f)", exp.name, name,
                 row["seed_ppl"], row["ppl"], row["bpb"], row["ood_bpb"])
    data = {"experiment": exp.name, "fingerprint": fingerprint, "weights": weights, "rows": rows,
            "val": {"chunks": dataset.val.chunks, "tokens": dataset.val.scored_tokens,
                    "bytes": dataset.val.text_bytes, "windows": len(dataset.val)},
            "ood": {"book": Path(ood_book).name, "max_chars": ood_max_chars, "chunks": ood.chunks, "tokens": ood.scored_tokens,
                    "bytes": ood.text_bytes},
            "seed_ppl_per_epoch": {k: [e.get("seed_ppl") for e in h["epochs"]] for k, h in histories.items()},
            "seed_reported_ppl": SEED_REPORTED_PPL, "sampling": {"top_k": TOP_K, "top_p": TOP_P,
                                                                 "max_new_tokens": max_new_tokens}}
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / PLOT_FILE).write_bytes(curves_png(histories, rows))
        atomic_write_text(tmp / SAMPLES_FILE, json.dumps(samples, indent=1, ensure_ascii=False))
        atomic_write_text(tmp / EVAL_FILE, json.dumps(data, indent=1))
    return EvalReport(out, data, reused=False)


# ---------------------------------------------------------------------------------------- views

def eval_table_md(rows: list[dict[str, Any]]) -> str:
    """Models and baselines side by side: the seed's metric, token-weighted perplexity, bits per byte on
    the validation text and on the out-of-domain book."""
    body = [(r["model"], r["kind"], f"{r['parameters']:,}" if r.get("parameters") else "",
             round(r["seed_ppl"], 2), round(r["ppl"], 2), round(r["bpb"], 3), round(r["ood_bpb"], 3),
             f"{r['scored_tokens']:,}") for r in rows]
    return md_table(body, ["model", "kind", "parameters", "seed ppl", "ppl", "bits/byte", "OOD bits/byte",
                           "val tokens"], align="llrrrrrr", digits=3)


def samples_md(samples: dict[str, list[dict[str, str]]], limit: int = 300) -> str:
    """The samples as markdown (not a code block): each model's continuations of the seed's prompts, the
    prompt in italics; markup characters inside prompts and continuations are escaped, so each reads as it
    was sampled."""
    from distillery_assets.markdown import escape_md

    out = []
    for key, items in samples.items():
        out.append(f"**{escape_md(key)}**\n")
        out += [f"- _{escape_md(s['prompt'])}_ … {escape_md(s['continuation'][:limit])}" for s in items]
        out.append("")
    return "\n".join(out).strip()


def curves_png(histories: dict[str, dict], rows: list[dict[str, Any]]) -> bytes:
    """Left: training loss per logged step and validation loss per epoch, each model; right: validation
    perplexity per epoch with the unigram and 3-gram baselines as dashed lines."""
    from distillery_assets.plots import figure_png

    baselines = {r["model"]: r["ppl"] for r in rows if r["kind"] == "baseline"}

    def draw(fig_or_ax):
        ax = fig_or_ax
        fig = ax.figure
        ax.remove()
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for key, h in histories.items():
            steps = [s["step"] for s in h["steps"]]
            line, = left.plot(steps, [s["loss"] for s in h["steps"]], lw=0.6, alpha=0.6, label=f"{key} train")
            left.plot([e["steps"] for e in h["epochs"]], [e["val_loss"] for e in h["epochs"]], "o-",
                      color=line.get_color(), label=f"{key} val")
            right.plot([e["epoch"] for e in h["epochs"]], [e["val_ppl"] for e in h["epochs"]], "o-",
                       color=line.get_color(), label=f"{key} val ppl")
        for name, ppl in baselines.items():
            right.axhline(ppl, linestyle="--", lw=1, color="grey" if name == "unigram" else "black",
                          label=f"{name} ppl")
        left.set_xlabel("step"), left.set_ylabel("loss (nats/token)"), left.legend(fontsize=7)
        left.set_title("Loss: train per step, validation per epoch", fontsize=10)
        right.set_xlabel("epoch"), right.set_ylabel("validation perplexity"), right.set_yscale("log")
        right.set_title("Validation perplexity against the baselines", fontsize=10)
        right.legend(fontsize=7)

    return figure_png(draw, figsize=(10, 3.6))


def curves_inline_md(histories: dict[str, dict], rows: list[dict[str, Any]]) -> str:
    """Validation perplexity per epoch of each model, with the unigram and 3-gram baselines as dashed lines
    (``-- unigram``, ``-- 3-gram``; log scale), as a labelled chart the Dagster UI shows in place."""
    from distillery_assets.plots import BLACK, BLUE, GREEN, GREY, RED, Chart, Series, chart_md

    colours = iter([BLUE, RED, GREEN])
    series = [Series(key, [e["val_ppl"] for e in h["epochs"]], x=[e["epoch"] for e in h["epochs"]],
                     colour=next(colours, GREY), points=True) for key, h in histories.items()]
    series += [Series(r["model"], [r["ppl"]], style="hline", colour=GREY if r["model"] == "unigram" else BLACK)
               for r in rows if r["kind"] == "baseline"]
    return chart_md(Chart("Validation perplexity per epoch", "epoch", "perplexity (log)", series, logy=True))


# ------------------------------------------------------------------------------------------ card

CHAINED_LAYERS_NOTE = (
    "The seed's corpus model looped `for layer in self.layers: composites = layer(x)`: every layer read the "
    "embeddings and only the last one's output was used, so the other layers trained nothing. Here the layers "
    "are chained (layer k+1 reads layer k's 24 composites); `chain_layers: false` keeps the seed's wiring for "
    "reproduction only.")
NO_GGUF_NOTE = ("ThymeLM has no GGUF form: llama.cpp has no architecture with its outer-product state update, so "
                "it is published as PyTorch weights (`model.pt`) with its config (`model.json`) and tokenizer.")


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def model_card_markdown(exp: Experiment, report: dict[str, Any], models: dict[str, dict[str, Any]],
                        corpus_stats: dict[str, Any], tokenizer_info: dict[str, Any], *, repo_id: str,
                        run_id: str | None = None, ggufs: dict[str, dict[str, Any]] | None = None) -> str:
    """The Hub card of one experiment: data, tokenizer, each architecture, metrics and the perplexity
    table against the baselines, samples, each transformer's GGUF (``ggufs``: its ``export.json`` record by
    model key) and the notes that apply (no GGUF for ThymeLM; chained layers)."""
    from distillery_assets.hub.cards import ModelCardInfo, render_model_card

    rows = report["rows"]
    arch_rows = [(k, m["architecture"], f"{m['parameters']:,}",
                  ", ".join(f"{a}={b}" for a, b in m["config"].items() if b is not None)) for k, m in models.items()]
    sources = ", ".join(s.kind for s in exp.corpus.sources)
    extra = [
        "## Data", "",
        f"Corpus sources: {sources}; {corpus_stats.get('documents', '?')} documents, "
        f"{corpus_stats.get('characters', 0):,} characters after the seed's cleaning "
        f"({corpus_stats.get('dropped', 0)} dropped, each with its reason). Chunks as the seed packed them: "
        f"paragraphs joined by one space while under {exp.dataset.chunk_chars} characters"
        + (f", chunks of {exp.dataset.min_chunk_chars} characters or fewer dropped" if exp.dataset.min_chunk_chars else "")
        + f"; {_count(tokenizer_info.get('chunks'))} chunks split {_count(tokenizer_info.get('train_chunks'))} / "
        f"{_count(tokenizer_info.get('val_chunks'))} ({1 - exp.dataset.val_fraction:.0%}/{exp.dataset.val_fraction:.0%} "
        f"by chunk, seed {exp.dataset.split_seed}); windows of {exp.dataset.window} tokens.", "",
        "## Tokenizer", "",
        f"BPE (`tokenizers`), vocabulary {tokenizer_info.get('vocab_size')}, specials `<PAD> <UNK> <BOS> <EOS>` = 0-3, "
        f"trained on the {'training chunks only' if tokenizer_info.get('trained_on') == 'train' else 'all chunks (the seed leak)'}.",
        "", "## Architecture", "", md_table(arch_rows, ["model", "architecture", "parameters", "config"]), "",
        "## Perplexity against the baselines", "",
        "Validation split, same tokenizer; `seed ppl` is the seed's metric (exp of the mean of per-batch means), "
        f"`ppl` token-weighted, bits per byte over the raw text; OOD: {report['ood']['book']} (no experiment trains on it).",
        "", eval_table_md(rows), "", f"The seed reported {SEED_REPORTED_PPL} on its eight books (its metric).", "",
    ]
    if ggufs:
        gguf_rows = [(k, f"`{k}/{Path(g['gguf_path']).name}`", g["quant"], f"{g['gguf_bytes'] / 1e6:.2f}",
                      f"{g['logits_max_abs_diff']:.2e}", f"{g['top1_agreement']:.3f}") for k, g in ggufs.items()]
        extra += ["## GGUF for llama.cpp", "",
                  "Each transformer exported with the project's GGUF path and checked in llama.cpp: the prompt's "
                  "tokens as the tokenizer gives them, logits against torch on the same prompt.", "",
                  md_table(gguf_rows, ["model", "file", "quant", "MB", "max logit diff vs torch", "top-1 agreement"]),
                  ""]
    if any(m["architecture"] == "thyme" for m in models.values()):
        extra += ["## No GGUF for ThymeLM", "", NO_GGUF_NOTE, ""]
    if any(m["architecture"] == "thyme" and m["config"].get("n_layers", 1) > 1 for m in models.values()):
        extra += ["## Chained layers (a fix of the seed)", "", CHAINED_LAYERS_NOTE, ""]
    neural = [r for r in rows if r["kind"] != "baseline"]
    info = ModelCardInfo(
        repo_id=repo_id, title=f"Thyme: {exp.name}", asset_key="thyme_upload", run_id=run_id,
        description=(exp.description or f"Language models trained from scratch on {exp.name}") +
                    ". Trained from scratch by Distillery (seed 002's Thyme recipe).",
        tags=["thyme", "from-scratch", *sorted({m["architecture"] for m in models.values()})],
        artefact="PyTorch weights trained from scratch (`model.pt` + `model.json`) and `tokenizer.json`"
                 + ("; a GGUF of each transformer" if ggufs else ""),
        library_name="pytorch",
        settings={k: v for k, v in exp.training.model_dump().items() if v is not None},
        metrics={f"{r['model']} {m}": r[m] for r in neural for m in ("seed_ppl", "ppl", "bpb", "ood_bpb")},
        extra_markdown="\n".join(extra),
        limitations=("A small language model trained from scratch on a few books: its text is fluent only "
                     "locally and it knows nothing beyond them. For experiments, not for use."),
    )
    return render_model_card(info)
