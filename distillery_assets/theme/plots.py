"""The theme pipeline's charts for asset metadata, drawn through :mod:`distillery_assets.plots`."""

from __future__ import annotations

from distillery_assets.plots import GREY, RED, Chart, Series, chart_md, figure_png, save_png  # noqa: F401  (save_png re-exported)


def totals_histogram_png(histogram: dict[str, int], min_matches: int) -> bytes:
    labels, values = list(histogram), list(histogram.values())
    colours = ["#b23a48" if int(label.lstrip(">=")) >= min_matches else "#9aa5b1" for label in labels]

    def draw(ax) -> None:
        ax.bar(labels, values, color=colours)
        ax.set_xlabel("distinct theme keywords per chunk (summed over themes)")
        ax.set_ylabel("chunks")

    return figure_png(draw, figsize=(6, 3), title=f"Keyword totals (kept: >= {min_matches}, red)")


def totals_histogram_inline_md(histogram: dict[str, int], min_matches: int) -> str:
    """The same histogram as a labelled chart the asset page shows in place (kept bars red, the rest grey)."""
    labels, values = list(histogram), list(histogram.values())
    kept = [int(label.lstrip(">=")) >= min_matches for label in labels]
    xs = list(range(len(labels)))
    return chart_md(Chart(f"chunks by keyword total (kept: >= {min_matches})", "keyword total", "chunks", [
        Series(f"kept (>= {min_matches})", [v if k else 0 for v, k in zip(values, kept)], x=xs, style="bar", colour=RED),
        Series("dropped", [0 if k else v for v, k in zip(values, kept)], x=xs, style="bar", colour=GREY)],
        xticklabels=labels))
