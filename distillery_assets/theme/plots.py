"""Small PNG charts for asset metadata (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from distillery_assets.io import atomic_write_bytes


def totals_histogram_png(histogram: dict[str, int], min_matches: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = list(histogram), list(histogram.values())
    colours = ["#b23a48" if int(label.lstrip(">=")) >= min_matches else "#9aa5b1" for label in labels]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(labels, values, color=colours)
    ax.set_xlabel("distinct theme keywords per chunk (summed over themes)")
    ax.set_ylabel("chunks")
    ax.set_title(f"Keyword totals (kept: >= {min_matches}, red)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def save_png(png: bytes, path: Path, alt: str) -> str:
    """Write the PNG; return a Markdown snippet that shows it inline in the Dagster UI."""
    atomic_write_bytes(Path(path), png)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
