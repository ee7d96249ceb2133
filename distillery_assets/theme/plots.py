"""The theme pipeline's charts for asset metadata, drawn through :mod:`distillery_assets.plots`."""

from __future__ import annotations

from distillery_assets.plots import GREY, RED, figure_png, inline_md, save_png  # noqa: F401  (save_png re-exported)


def totals_histogram_png(histogram: dict[str, int], min_matches: int) -> bytes:
    labels, values = list(histogram), list(histogram.values())
    colours = ["#b23a48" if int(label.lstrip(">=")) >= min_matches else "#9aa5b1" for label in labels]

    def draw(ax) -> None:
        ax.bar(labels, values, color=colours)
        ax.set_xlabel("distinct theme keywords per chunk (summed over themes)")
        ax.set_ylabel("chunks")

    return figure_png(draw, figsize=(6, 3), title=f"Keyword totals (kept: >= {min_matches}, red)")


def totals_histogram_inline_md(histogram: dict[str, int], min_matches: int) -> str:
    """The same histogram small enough for the asset page to show in place (kept bars red, the rest grey)."""
    labels, values = list(histogram), list(histogram.values())
    kept = [int(label.lstrip(">=")) >= min_matches for label in labels]

    def draw(ax) -> None:
        ax.bar(labels, values, color=[RED if k else GREY for k in kept])
        ax.set_xticks(range(len(labels)), labels if len(labels) <= 12 else [l if i % 2 == 0 else "" for i, l in enumerate(labels)])

    return inline_md(draw, f"chunks by keyword total; red bars kept (>= {min_matches})", colours=[RED])
