"""How a filter's scorer is judged: regression error per dimension, tier accuracy, and a binary decision
at a tier threshold (FineWeb-Edu's classifier reached F1 0.82 at its "educational" threshold; that number
is the field's anchor and is named beside ours in the report).

Everything takes plain arrays: ``pred`` and ``target`` are (n, n_dims) float matrices in the order of
``dims``; overall scores come from ``weights`` (a plain weighted sum) or from an ``overall`` callable
(the filter's own rules, caps and gatekeepers included); tiers are ``(name, threshold)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from distillery_assets.markdown import md_table

FINEWEB_EDU_F1 = 0.82
"""F1 of FineWeb-Edu's distilled classifier at its educational threshold (the anchor named in reports)."""

Tiers = Sequence[tuple[str, float]]
OverallFn = Callable[[np.ndarray], np.ndarray]


def as_matrix(values: Any, n_dims: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1 and n_dims == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != n_dims:
        raise ValueError(f"{what}: expected shape (n, {n_dims}), got {array.shape}")
    return array


def regression_metrics(pred: Any, target: Any, dims: Sequence[str]) -> dict[str, float]:
    """``loss`` (MSE over all dims, the training loss), ``mae``, ``rmse`` and ``<dim>_mae``/``<dim>_rmse``:
    the seed's per-epoch metric names."""
    p, t = as_matrix(pred, len(dims), "pred"), as_matrix(target, len(dims), "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ")
    if not len(p):
        raise ValueError("no examples to score")
    err = p - t
    out = {"loss": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))),
           "rmse": float(np.sqrt(np.mean(err**2)))}
    for j, dim in enumerate(dims):
        out[f"{dim}_mae"] = float(np.mean(np.abs(err[:, j])))
        out[f"{dim}_rmse"] = float(np.sqrt(np.mean(err[:, j] ** 2)))
    return out


def weighted_overall(weights: Sequence[float] | Mapping[str, float], dims: Sequence[str] | None = None) -> OverallFn:
    """Overall = sum(dim x weight), no caps: the default when no rules are given."""
    if isinstance(weights, Mapping):
        if dims is None:
            raise ValueError("dims are needed to order a weights mapping")
        missing = [d for d in dims if d not in weights]
        if missing:
            raise ValueError(f"no weight for dimension(s) {missing}")
        vector = np.asarray([float(weights[d]) for d in dims])
    else:
        vector = np.asarray(list(weights), dtype=np.float64)

    def overall(matrix: np.ndarray) -> np.ndarray:
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape[1] != len(vector):
            raise ValueError(f"{m.shape[1]} dims for {len(vector)} weights")
        return m @ vector

    return overall


def sorted_tiers(tiers: Tiers | Mapping[str, float]) -> list[tuple[str, float]]:
    items = list(tiers.items()) if isinstance(tiers, Mapping) else [(str(n), float(t)) for n, t in tiers]
    if not items:
        raise ValueError("at least one tier is needed")
    return sorted(((str(n), float(t)) for n, t in items), key=lambda x: -x[1])


def tier_of(score: float, tiers: Tiers | Mapping[str, float]) -> str:
    """The first tier, by descending threshold, whose threshold the score reaches (else the lowest)."""
    ordered = sorted_tiers(tiers)
    for name, threshold in ordered:
        if score >= threshold:
            return name
    return ordered[-1][0]


def tiers_of(scores: Sequence[float], tiers: Tiers | Mapping[str, float]) -> list[str]:
    ordered = sorted_tiers(tiers)
    return [tier_of(float(s), ordered) for s in scores]


def tier_accuracy(pred_overall: Sequence[float], true_overall: Sequence[float],
                  tiers: Tiers | Mapping[str, float]) -> float:
    p, t = tiers_of(pred_overall, tiers), tiers_of(true_overall, tiers)
    return float(np.mean([a == b for a, b in zip(p, t, strict=True)])) if p else float("nan")


def binary_at(pred_overall: Sequence[float], true_overall: Sequence[float], threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of "overall >= threshold" (the positive class), with the counts."""
    p = np.asarray(pred_overall, dtype=np.float64) >= threshold
    t = np.asarray(true_overall, dtype=np.float64) >= threshold
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": float(threshold), "precision": precision, "recall": recall, "f1": f1,
            "positives": int(np.sum(t)), "predicted_positives": int(np.sum(p)), "n": int(len(t))}


def judge(pred: Any, target: Any, dims: Sequence[str], *, overall: OverallFn, tiers: Tiers | Mapping[str, float],
          threshold: float | None = None) -> dict[str, Any]:
    """Everything one results-table row holds for one model on one split. ``threshold`` defaults to the
    lowest tier threshold above the bottom tier (the "worth keeping" line)."""
    p, t = as_matrix(pred, len(dims), "pred"), as_matrix(target, len(dims), "target")
    row: dict[str, Any] = regression_metrics(p, t, dims)
    po, to = overall(p), overall(t)
    row["overall_mae"] = float(np.mean(np.abs(po - to)))
    row["tier_accuracy"] = tier_accuracy(po, to, tiers)
    ordered = sorted_tiers(tiers)
    if threshold is None:
        threshold = ordered[-2][1] if len(ordered) > 1 else ordered[0][1]
    row["binary"] = binary_at(po, to, threshold)
    return row


def results_rows(results: Mapping[str, Mapping[str, Any]], dims: Sequence[str]) -> list[list[Any]]:
    """One row per model: name, MAE, RMSE, overall MAE, tier accuracy, P/R/F1, per-dim MAE."""
    rows = []
    for name, r in results.items():
        b = r.get("binary", {})
        rows.append([name, r["mae"], r["rmse"], r.get("overall_mae"), r.get("tier_accuracy"),
                     b.get("precision"), b.get("recall"), b.get("f1"), *[r[f"{d}_mae"] for d in dims]])
    return rows


def results_head(dims: Sequence[str]) -> list[str]:
    return ["model", "MAE", "RMSE", "overall MAE", "tier acc.", "precision", "recall", "F1",
            *[f"{d} MAE" for d in dims]]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value and abs(value) < 0.01:  # a learning rate or a cost per document: significant digits, not 0.000
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def results_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a judged results table (``model`` against ``mean`` and ``ridge``, the binary cut),
    with FineWeb-Edu's F1 as the anchor."""
    m, mean, ridge = results["model"], results["mean"], results["ridge"]
    b = m["binary"]
    return {
        "test_mae": round(m["mae"], 4), "mean_predictor_test_mae": round(mean["mae"], 4),
        "ridge_test_mae": round(ridge["mae"], 4), "beats_mean_predictor": bool(m["mae"] < mean["mae"]),
        "beats_ridge": bool(m["mae"] < ridge["mae"]),
        "tier_accuracy": round(m["tier_accuracy"], 4),
        "binary_threshold": b["threshold"], "precision": round(b["precision"], 4), "recall": round(b["recall"], 4),
        "f1": round(b["f1"], 4),
        "f1_anchor": f"FineWeb-Edu's distilled classifier: F1 {FINEWEB_EDU_F1} at its educational threshold "
                     f"(~450k Llama-3-70B labels); this scorer: F1 {b['f1']:.2f} at overall >= {b['threshold']:g} on "
                     f"{b['n']} test documents ({b['positives']} positive)",
    }


def results_markdown(results: Mapping[str, Mapping[str, Any]], dims: Sequence[str]) -> str:
    """Two narrow tables that fit a metadata column: the overall figures one row per model, then the MAE one row
    per dimension with a column per model (the .docx keeps the one wide table of ``results_rows``)."""
    overall = md_table([[fmt(v) for v in row[:8]] for row in results_rows(results, dims)], results_head(dims)[:8])
    models = list(results)
    per_dim = md_table([[d, *[fmt(results[m][f"{d}_mae"]) for m in models]] for d in dims],
                       ["dimension (test MAE)", *models])
    return overall + "\n\n" + per_dim


# --------------------------------------------------------------------------------------------- in words

def relative(value: float, reference: float) -> str:
    """``value`` against ``reference`` as a reader cannot misread it: ``"43% below"``, ``"12% above"``,
    ``"equal to"`` (rounded to whole percent; a reference of 0 gives ``"n/a vs"``)."""
    if not reference:
        return "n/a vs"
    change = (value - reference) / reference
    if round(change * 100) == 0:
        return "equal to"
    return f"{abs(change):.0%} {'below' if change < 0 else 'above'}"


def mae_sentence(results: Mapping[str, Mapping[str, Any]], n: int | None = None) -> str:
    """``"MAE 1.13, 43% below the mean predictor (2.00), 24% below ridge (1.49)"``: the kept scorer's test MAE
    against both baselines (on ``n`` test documents when given)."""
    m, mean, ridge = results["model"]["mae"], results["mean"]["mae"], results["ridge"]["mae"]
    on = f" on {n} test documents" if n else ""
    return (f"test MAE {m:.3f}{on}, {relative(m, mean)} the mean predictor ({mean:.3f}), "
            f"{relative(m, ridge)} ridge regression on frozen embeddings ({ridge:.3f})")


CANDIDATE_HEAD = ("candidate", "outcome", "val MAE", "test MAE", "test vs mean", "test vs ridge", "best / run epochs",
                  "learning rate", "seconds", "note")


def candidate_rows(candidates: Sequence[Mapping[str, Any]], mean_test_mae: float,
                   ridge_test_mae: float) -> list[list[str]]:
    """One row per candidate head of a training run (``training_metadata.json``'s ``candidates``), under
    :data:`CANDIDATE_HEAD`: the kept one says ``kept``; skipped ones say why in the note."""
    rows = []
    for c in candidates:
        trained = c.get("status") == "trained"
        test = c.get("test_mae")
        rows.append([
            c["name"], "kept" if c.get("kept") else ("compared" if trained else "skipped"),
            fmt(c.get("val_mae")), fmt(test), relative(test, mean_test_mae) if test is not None else "-",
            relative(test, ridge_test_mae) if test is not None else "-",
            (f"{c.get('best_epoch')} / {c.get('epochs_run')}" if c.get("epochs_run") else
             ("closed form" if trained else "-")),
            fmt(c.get("learning_rate")), fmt(c.get("seconds"), 1), str(c.get("note") or "")])
    return rows


def candidates_markdown(candidates: Sequence[Mapping[str, Any]], results: Mapping[str, Mapping[str, Any]]) -> str:
    return md_table(candidate_rows(candidates, results["mean"]["mae"], results["ridge"]["mae"]), list(CANDIDATE_HEAD))
