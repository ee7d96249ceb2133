"""A trained filter's report: the seed's plots and summary, and a .docx document (python-docx).

:func:`write_plots` -> ``overall_metrics.png`` (MAE and RMSE, train and val, per epoch),
``per_dimension_mae.png`` (val MAE per dimension per epoch), ``loss_curves.png`` (MSE), and
``training_summary.txt``; :func:`curves_md` -> the same curves as labelled charts the asset page shows in
place (both drawn through :mod:`distillery_assets.plots`, the one plot set-up); :func:`write_docx` -> the report
with summary, filter architecture (the dimensions table), method, results (the results table with the
baselines, and the plots), conclusions, and the cost of scoring: the oracle's $ per 1,000 documents against
the scorer's.

Everything is plain data in: ``history`` (``training_history.json``: ``[{epoch, train:{...}, val:{...}}]``),
``metadata`` (``training_metadata.json``), the results table by model name, the dimensions as
``(name, weight, description)`` rows, tiers as ``(name, threshold)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.filters.metrics import (CANDIDATE_HEAD, FINEWEB_EDU_F1, candidate_rows, fmt, mae_sentence,
                                              relative, results_head, results_rows)
from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.llm.pricing import estimate_cost
from distillery_assets.plots import BLUE, GREEN, GREY, RED, Chart, Series, chart_md, pyplot

PLOTS = ("overall_metrics.png", "per_dimension_mae.png", "loss_curves.png", "predicted_vs_true.png")
SUMMARY = "training_summary.txt"
DPI = 150


def _series(history: Sequence[Mapping[str, Any]], split: str, key: str) -> list[float]:
    return [float(h[split][key]) for h in history]


def _save(fig: Any, path: Path, integer_epochs: bool = True) -> Path:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 (matplotlib loads only when a report is drawn)

    for ax in fig.axes if integer_epochs else ():  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


@dataclass
class Levels:
    """Validation MAE of the baselines, drawn as flat lines beside a candidate's curves."""

    mean: float | None = None
    ridge: float | None = None

    def lines(self) -> list[tuple[str, float, str]]:
        return [(label, v, colour) for label, v, colour in (("mean predictor (val)", self.mean, GREY),
                                                            ("ridge (val)", self.ridge, GREEN)) if v is not None]


def write_plots(history: Sequence[Mapping[str, Any]], dims: Sequence[str], out_dir: Path, *,
                title: str = "", levels: Levels | None = None, test: tuple[Any, Any] | None = None,
                curve_of: str = "") -> dict[str, Path]:
    """The plots and ``training_summary.txt`` in ``out_dir`` (each written atomically). ``history``: the epochs
    of the trained candidate whose curves are drawn (``curve_of`` names it; empty when only ridge ran),
    ``levels``: the baselines' validation MAE drawn flat across them, ``test``: (target, predicted) matrices of
    the kept scorer on the test split, for a predicted-vs-true scatter per dimension."""
    import numpy as np

    plt = pyplot()
    levels = levels or Levels()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = [int(h["epoch"]) for h in history]
    span = [epochs[0], epochs[-1]] if epochs else [0, 1]
    paths: dict[str, Path] = {}
    who = f" ({curve_of})" if curve_of else ""

    def flat(ax) -> None:
        for label, value, colour in levels.lines():
            ax.plot(span, [value, value], "--", color=colour, label=label, linewidth=1.2)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "mae", "MAE"), (axes[1], "rmse", "RMSE")):
        for split, style, name in (("train", "-o", "train (training pass)"), ("val", "-s", "val")):
            if history:
                ax.plot(epochs, _series(history, split, key), style, label=name, markersize=3)
        if key == "mae":
            flat(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch{who}" if history else f"{label}: no epochs (closed form only)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Overall metrics")
    paths["overall_metrics.png"] = _save(fig, out_dir / "overall_metrics.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for dim in dims:
        if history:
            ax.plot(epochs, _series(history, "val", f"{dim}_mae"), "-o", label=dim, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MAE")
    ax.set_title(f"Validation MAE per dimension{who}")
    ax.grid(alpha=0.3)
    if history:
        ax.legend(fontsize=8, ncol=2)
    paths["per_dimension_mae.png"] = _save(fig, out_dir / "per_dimension_mae.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for split, style, name in (("train", "-o", "train (training pass)"), ("val", "-s", "val")):
        if history:
            ax.plot(epochs, _series(history, split, "loss"), style, label=name, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Loss (MSE)")
    ax.set_title(f"Loss curves{who}")
    ax.grid(alpha=0.3)
    if history:
        ax.legend()
    paths["loss_curves.png"] = _save(fig, out_dir / "loss_curves.png")

    if test is not None:
        target, pred = (np.asarray(m, dtype=float) for m in test)
        fig, axes = plt.subplots(1, len(dims), figsize=(3.6 * len(dims), 3.6), squeeze=False)
        lo, hi = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
        for j, (ax, dim) in enumerate(zip(axes[0], dims, strict=True)):
            ax.scatter(target[:, j], pred[:, j], s=12, alpha=0.6, color=BLUE)
            ax.plot([lo, hi], [lo, hi], "--", color=GREY, linewidth=1)
            ax.set_title(f"{dim}\nMAE {np.mean(np.abs(pred[:, j] - target[:, j])):.2f}", fontsize=9)
            ax.set_xlabel("true")
            ax.set_ylabel("predicted" if j == 0 else "")
            ax.grid(alpha=0.3)
        fig.suptitle(f"Test split: predicted against true ({len(target)} documents)")
        paths["predicted_vs_true.png"] = _save(fig, out_dir / "predicted_vs_true.png", integer_epochs=False)

    paths[SUMMARY] = atomic_write_text(out_dir / SUMMARY, training_summary(history, dims, title=title,
                                                                          curve_of=curve_of))
    return paths


EPOCH_HEAD = ("epoch", "train loss", "train MAE", "val MAE", "val RMSE")


def epoch_rows(history: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """Per epoch: epoch, train loss, train MAE, val MAE, val RMSE (4 places), under :data:`EPOCH_HEAD`."""
    return [(h["epoch"], round(h["train"]["loss"], 4), round(h["train"]["mae"], 4), round(h["val"]["mae"], 4),
             round(h["val"]["rmse"], 4)) for h in history]


def curves_md(history: Sequence[Mapping[str, Any]], dims: Sequence[str], levels: Levels | None = None) -> dict[str, str]:
    """The training curves as labelled charts the asset page shows in place (markdown images, each under the
    UI's inline limit): MAE per epoch (train from the training pass, validation, and the baselines' validation
    MAE as flat lines), MSE loss, and the validation MAE of each dimension at the best epoch. Nothing when no
    candidate trained by epochs (ridge alone)."""
    if not history:
        return {}
    epochs = [h["epoch"] for h in history]
    span = [epochs[0], epochs[-1]]
    flat = [Series(label, [v, v], x=span, colour=colour) for label, v, colour in (levels or Levels()).lines()]

    def pair(key: str, title: str, ylabel: str, extra: Sequence[Series] = ()) -> str:
        return chart_md(Chart(title, "epoch", ylabel, [Series("train", _series(history, "train", key), x=epochs,
                                                              colour=BLUE),
                                                       Series("validation", _series(history, "val", key), x=epochs,
                                                              colour=RED), *extra]))

    best = min(history, key=lambda h: h["val"]["mae"])
    per_dim = Chart(f"Validation MAE per dimension (best epoch {best['epoch']})", "validation MAE", "dimension",
                    [Series("validation MAE", [float(best["val"][f"{d}_mae"]) for d in dims], style="bar",
                            colour=BLUE)], xticklabels=list(dims), horizontal=True)
    return {"mae_curves": pair("mae", "MAE per epoch", "MAE", flat),
            "loss_curves": pair("loss", "Loss (MSE) per epoch", "MSE loss"),
            "per_dimension_val_mae": chart_md(per_dim)}


def training_summary(history: Sequence[Mapping[str, Any]], dims: Sequence[str], *, title: str = "",
                     curve_of: str = "") -> str:
    lines = [title or "Training summary", "=" * max(16, len(title))]
    if not history:
        return "\n".join([*lines, "no epochs: only the closed-form ridge candidate ran"]) + "\n"
    last = history[-1]
    best = min(history, key=lambda h: h["val"]["mae"])
    lines += [*([f"candidate: {curve_of}"] if curve_of else []), f"epochs: {len(history)}",
              f"best epoch (val MAE): {best['epoch']}", "train metrics: from the training pass (dropout on)", ""]
    for name, rec in (("final", last), ("best", best)):
        lines.append(f"{name} epoch {rec['epoch']}:")
        for split in ("train", "val"):
            r = rec[split]
            lines.append(f"  {split:5s} MAE {r['mae']:.4f}  RMSE {r['rmse']:.4f}  loss {r['loss']:.4f}")
    lines += ["", "per-dimension MAE (best epoch, train / val):"]
    width = max(len(d) for d in dims)
    for dim in dims:
        lines.append(f"  {dim:<{width}}  {best['train'][f'{dim}_mae']:.4f} / {best['val'][f'{dim}_mae']:.4f}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- cost

def cost_per_1000(*, provider: str, model: str, prompt_tokens: float, completion_tokens: float) -> float | None:
    """The oracle's list-price $ per 1,000 documents from the mean tokens per document (None: unpriced)."""
    one = estimate_cost(provider, model, int(round(prompt_tokens)), int(round(completion_tokens)))
    return None if one is None else round(one * 1000, 6)


def scorer_cost_per_1000(docs_per_s: float, dollars_per_hour: float) -> float:
    """The scorer's $ per 1,000 documents on hardware billed at ``dollars_per_hour`` (0 on your own CPU)."""
    if docs_per_s <= 0:
        return math.inf
    return round(dollars_per_hour / 3600 / docs_per_s * 1000, 6)


@dataclass
class CostLine:
    what: str
    dollars_per_1000: float | None
    docs_per_s: float | None = None
    note: str = ""


COST_HEAD = ("", "$ per 1,000 documents", "documents/s", "note")


def cost_rows(costs: Sequence[CostLine]) -> list[tuple]:
    """The cost table's rows for the asset page (under :data:`COST_HEAD`; "unpriced" where no price is known)."""
    return [(c.what, c.dollars_per_1000 if c.dollars_per_1000 is not None else "unpriced",
             c.docs_per_s if c.docs_per_s is not None else "", c.note) for c in costs]


def cost_lines(total: Mapping[str, Any], oracle: Mapping[str, Any], *, labels_mode: bool,
               scorer_docs_per_s: float | None, reference: tuple[str, str], dollars_per_hour: float) -> list[CostLine]:
    """The report's cost table: the oracle as it ran (from the usage ``total`` summed over every
    materialization: documents asked, tokens, cost, seconds) and priced as the ``reference`` (provider,
    model) for the same tokens; or a note that a labels file cost nothing; then the trained scorer at
    ``dollars_per_hour`` for the CPU it runs on (when its speed is known)."""
    costs: list[CostLine] = []
    asked = total.get("documents_asked", 0)
    oracle_speed = round(asked / total["oracle_seconds"], 3) if asked and total.get("oracle_seconds") else None
    if asked:
        mean_in, mean_out = total["input_tokens"] / asked, total["output_tokens"] / asked
        provider, model = oracle.get("provider") or "?", oracle.get("model") or "?"
        costs.append(CostLine(f"oracle as run ({provider} {model})", round(total["cost_usd"] / asked * 1000, 6),
                              oracle_speed, f"{mean_in:.0f} prompt + {mean_out:.0f} completion tokens per document"
                              + ("; a local model costs no API money" if provider == "local" else "")))
        ref = cost_per_1000(provider=reference[0], model=reference[1], prompt_tokens=mean_in,
                            completion_tokens=mean_out)
        costs.append(CostLine(f"oracle priced as {reference[1]}", ref, None, "list price, same tokens"))
    elif labels_mode:
        costs.append(CostLine("oracle (labels file)", None, None, "labels brought by the user: no oracle calls"))
    if scorer_docs_per_s:
        costs.append(CostLine("trained scorer (CPU)", scorer_cost_per_1000(scorer_docs_per_s, dollars_per_hour),
                              scorer_docs_per_s, f"at an assumed ${dollars_per_hour}/h for the CPU it runs on"))
    return costs


# -------------------------------------------------------------------------------------------------- docx

@dataclass
class ReportInputs:
    filter_name: str
    filter_version: str
    description: str
    dims: Sequence[tuple[str, float, str]]
    tiers: Sequence[tuple[str, float]]
    history: Sequence[Mapping[str, Any]]
    metadata: Mapping[str, Any]
    results: Mapping[str, Mapping[str, Any]]
    """Test-split results table by model name (``model``, ``mean``, ``ridge``...)."""
    plots_dir: Path
    oracle: str = "the oracle"
    prefilter: str = ""
    label_counts: Mapping[str, int] = field(default_factory=dict)
    costs: Sequence[CostLine] = ()
    notes: Sequence[str] = ()
    ground_truth: str = ""
    """Where the labels came from, in one sentence (default: the oracle scored every document)."""


def _table(doc: Any, head: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    table = doc.add_table(rows=1, cols=len(head))
    table.style = "Light Grid Accent 1"
    for cell, text in zip(table.rows[0].cells, head, strict=True):
        cell.text = str(text)
    for row in rows:
        cells = table.add_row().cells
        for cell, value in zip(cells, row, strict=True):
            cell.text = fmt(value)
    return table


def _kept(inputs: ReportInputs) -> str:
    return str(inputs.metadata.get("training_mode") or "model")


def conclusions(inputs: ReportInputs) -> list[str]:
    """Findings read off the numbers (what a reader should take away), stated as measured: the kept scorer's
    test MAE against both baselines in words (\"43% below the mean predictor\"), which candidate won and
    whether anything was learned beyond a linear probe."""
    r = inputs.results
    model, mean, ridge = r.get("model"), r.get("mean"), r.get("ridge")
    out = []
    kept = _kept(inputs)
    n = inputs.metadata.get("test_examples")
    if model and mean and ridge:
        out.append(f"The kept scorer ({kept}): {mae_sentence(r, n)}.")
        gain = 1 - model["mae"] / mean["mae"] if mean["mae"] else 0.0
        if gain <= 0:
            out.append("It does not beat predicting the training mean: these labels are not worth distilling as "
                       "they are (or the encoder cannot see what they measure).")
        elif kept == "ridge":
            out.append("Ridge regression on the frozen sentence embeddings (closed form) had the lowest validation "
                       "MAE, so the kept scorer is that ridge: no trained head did better than a linear probe here.")
        elif model["mae"] < ridge["mae"]:
            out.append(f"The {kept} head won the validation comparison and holds on test: it learned from the labels "
                       "more than a linear probe on the same embeddings can.")
        else:
            out.append(f"The {kept} head won on validation but not on test, where ridge is "
                       f"{relative(ridge['mae'], model['mae'])} it; with {n or 'few'} test documents the gap may be "
                       "noise.")
        if gain > 0 and gain < 0.1:
            out.append("The gain over the mean is under 10%: the labels carry little the encoder can see.")
    elif model and mean:
        out.append(f"Test MAE {model['mae']:.3f} against {mean['mae']:.3f} for the mean predictor "
                   f"({relative(model['mae'], mean['mae'])} it).")
    if inputs.history:
        best = min(inputs.history, key=lambda h: h["val"]["mae"])
        gap = best["val"]["mae"] - best["train"]["mae"]
        out.append(f"Best epoch {best['epoch']} of {len(inputs.history)} run: training-pass MAE "
                   f"{best['train']['mae']:.3f}, validation MAE {best['val']['mae']:.3f} (gap {gap:+.3f}"
                   f"{', overfitting' if gap > 0.25 * best['val']['mae'] else ''}).")
    if model and "binary" in model:
        b = model["binary"]
        out.append(f"At the {b['threshold']:g} threshold: precision {b['precision']:.2f}, recall {b['recall']:.2f}, "
                   f"F1 {b['f1']:.2f} (FineWeb-Edu's distilled classifier: F1 {FINEWEB_EDU_F1} at its "
                   f"educational threshold, on ~450k Llama-3-70B labels).")
    return out


def method_sentence(meta: Mapping[str, Any]) -> str:
    """What was trained, in one sentence: the recipe, the candidates compared and the one kept."""
    cands = meta.get("candidates") or []
    compared = [c["name"] for c in cands if c.get("status") == "trained"]
    skipped = [c["name"] for c in cands if c.get("status") == "skipped"]
    kept = next((c for c in cands if c.get("kept")), None)
    sizes = (f"{meta.get('train_examples', '?')} training, {meta.get('val_examples', '?')} validation and "
             f"{meta.get('test_examples', '?')} test documents")
    if not kept:
        return f"Trained {meta.get('training_mode', '?')} on {sizes}."
    how = ("closed form" if not kept.get("epochs_run") else
           f"best epoch {kept.get('best_epoch')} of {kept.get('epochs_run')} run (at most {kept.get('max_epochs')})")
    title = "with" if meta.get("include_title") else "without"
    return (f"Recipe {meta.get('recipe', '?')}: {', '.join(compared)} compared by validation MAE on {sizes}"
            + (f" ({', '.join(skipped)} not run)" if skipped else "")
            + f"; kept {kept['name']} ({how}). The model reads each document {title} its title "
            f"({meta.get('include_title_reason') or 'as configured'}).")


def write_docx(inputs: ReportInputs, path: Path) -> Path:
    """The training report as .docx, written atomically."""
    from docx import Document
    from docx.shared import Inches

    doc = Document()
    name = f"{inputs.filter_name} v{inputs.filter_version}"
    doc.add_heading(f"Training report: {name}", 0)
    doc.add_paragraph(inputs.description)

    doc.add_heading("Summary", 1)
    for line in conclusions(inputs)[:2] or ["No results were recorded."]:
        doc.add_paragraph(line, style="List Bullet")
    meta = inputs.metadata
    doc.add_paragraph(method_sentence(meta))

    doc.add_heading("Filter architecture", 1)
    doc.add_heading("Stage 1: rule-based prefilter", 2)
    doc.add_paragraph(inputs.prefilter or "Documents pass a rule-based prefilter before they are scored.")
    doc.add_heading("Stage 2: multi-dimensional scoring", 2)
    doc.add_paragraph("Each dimension is scored; the overall score is the weighted sum, then caps and "
                      "gatekeepers; the tier is the first whose threshold the overall reaches.")
    _table(doc, ["dimension", "weight", "description"], [list(d) for d in inputs.dims])
    doc.add_paragraph("")
    _table(doc, ["tier", "threshold"], [list(t) for t in inputs.tiers])

    doc.add_heading("Method", 1)
    doc.add_paragraph((inputs.ground_truth or f"Ground truth: {inputs.oracle} scored every document against "
                       "the filter's prompt.") + (" Labelled documents per tier: " + ", ".join(
                           f"{k}: {v}" for k, v in inputs.label_counts.items()) + "." if inputs.label_counts else ""))
    settings = [(k, meta.get(k)) for k in ("recipe", "training_mode", "model_name", "max_length", "epochs",
                                            "batch_size", "learning_rate", "warmup_steps", "num_parameters",
                                            "num_trainable_parameters", "include_title", "device") if k in meta]
    _table(doc, ["setting", "value"], settings)
    doc.add_paragraph("Candidates: ridge in closed form (its penalty chosen on validation); gradient candidates "
                      "(MLP, fine-tuning) with mean squared error over all dimensions and AdamW, each keeping its "
                      "best epoch by validation MAE and stopping after a run of epochs without improvement. The "
                      "candidate with the lowest validation MAE is kept. Baselines on the same test split: the "
                      "training mean for every document, and the ridge regression on frozen sentence embeddings.")

    doc.add_heading("Results", 1)
    dims = [d[0] for d in inputs.dims]
    # two tables a page wide: the judged metrics per model, then the per-dimension MAE (a dimension a row)
    cands = inputs.metadata.get("candidates") or []
    if cands and "mean" in inputs.results and "ridge" in inputs.results:
        doc.add_paragraph("Every candidate, on validation (what chose the kept one) and on test:")
        rows = candidate_rows(cands, inputs.results["mean"]["mae"], inputs.results["ridge"]["mae"])
        _table(doc, CANDIDATE_HEAD[:7], [row[:7] for row in rows])
        doc.add_paragraph("")
    head, rows = results_head(dims), results_rows(inputs.results, dims)
    _table(doc, head[:8], [row[:8] for row in rows])
    doc.add_paragraph("")
    _table(doc, ["test MAE", *[row[0] for row in rows]], [[d, *[row[8 + j] for row in rows]] for j, d in enumerate(dims)])
    for plot, caption in zip(PLOTS, ("MAE and RMSE per epoch, with the baselines' validation MAE",
                                      "Validation MAE per dimension", "Loss (MSE)",
                                      "Test split: the kept scorer's prediction against the true score"),
                             strict=True):
        file = Path(inputs.plots_dir) / plot
        if file.exists():
            doc.add_picture(str(file), width=Inches(6))
            doc.add_paragraph().add_run(caption).italic = True

    doc.add_heading("Conclusions", 1)
    for line in [*conclusions(inputs), *inputs.notes]:
        doc.add_paragraph(line, style="List Bullet")

    doc.add_heading("Cost", 1)
    if inputs.costs:
        _table(doc, COST_HEAD, [[c.what, c.dollars_per_1000, c.docs_per_s, c.note] for c in inputs.costs])
    else:
        doc.add_paragraph("No cost figures were recorded.")

    path = Path(path)
    with atomic_path(path) as tmp:
        doc.save(str(tmp))
    return path
