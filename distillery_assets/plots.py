"""Plots for asset metadata: a full-size PNG on disk and a tiny copy the Dagster UI shows in place.

Dagster renders a markdown metadata entry on the asset page only while it is shorter than
:data:`INLINE_MD_LIMIT` characters; longer entries hide behind "Show Markdown". A chart drawn without
anti-aliasing and reduced to a handful of palette colours compresses to a few hundred bytes, so its
``data:`` URI fits. :func:`inline_md` does that, shrinking the image until it fits, and every pipeline
uses it (fine-tune loss curves, theme keyword histogram, thyme and filter training curves).

Usage::

    def draw(ax):
        ax.plot(xs, ys, color=BLUE)

    md = inline_md(draw, "loss per epoch (train blue)", colours=[BLUE])
    png = figure_png(draw_full)          # the full-size chart, written with save_png()
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_bytes

INLINE_MD_LIMIT = 1000
"""Dagster's UI shows a markdown entry in place only below this many characters (else behind a click)."""

WHITE, GREY = "#ffffff", "#6e6e6e"
BLUE, RED, GREEN, ORANGE = "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def pyplot():
    """matplotlib's pyplot on the Agg backend: the one plot set-up (charts with several axes draw on it directly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(draw: Callable[[Any], None], *, figsize: tuple[float, float] = (6, 3.2), dpi: int = 100,
               title: str | None = None) -> bytes:
    """A full-size PNG of whatever ``draw(ax)`` puts on one axes (for files and reports)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    draw(ax)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def tiny_png(draw: Callable[[Any], None], colours: Sequence[str], *, dpi: int = 60,
             figsize: tuple[float, float] = (4, 2)) -> bytes:
    """``draw(ax)`` rendered small, without anti-aliasing, quantised to white, grey and ``colours``."""
    from PIL import Image

    plt = pyplot()
    flat = {"lines.antialiased": False, "text.antialiased": False, "patch.antialiased": False, "font.size": 7}
    with plt.rc_context(flat):
        fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
        draw(ax)
        ax.tick_params(colors=GREY)
        for side, spine in ax.spines.items():
            spine.set_color(GREY)
            spine.set_visible(side in ("left", "bottom"))
        fig.tight_layout(pad=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    palette_rgb = [_rgb(c) for c in (WHITE, GREY, *colours)]
    palette = Image.new("P", (1, 1))
    flat_palette = [v for rgb in palette_rgb for v in rgb]
    palette.putpalette(flat_palette + [0] * (768 - len(flat_palette)))
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    bits = 1 if len(palette_rgb) <= 2 else 2 if len(palette_rgb) <= 4 else 4 if len(palette_rgb) <= 16 else 8
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True, bits=bits)
    return out.getvalue()


def png_md(png: bytes, alt: str) -> str:
    """A markdown image embedding ``png`` as a data URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def inline_md(draw: Callable[[Any], None], alt: str, *, colours: Sequence[str], fallback: str = "",
              figsize: tuple[float, float] = (4, 2), dpis: Sequence[int] = (60, 50, 40, 30)) -> str:
    """The chart as one markdown image under :data:`INLINE_MD_LIMIT` characters, shrinking it until it fits;
    ``fallback`` (or a note) when even the smallest is too large. ``alt`` should say what the colours mean."""
    for dpi in dpis:
        md = png_md(tiny_png(draw, colours, dpi=dpi, figsize=figsize), alt)
        if len(md) < INLINE_MD_LIMIT:
            return md
    return fallback or f"_(plot too large to show in place: {alt})_"


def save_png(png: bytes, path: Path, alt: str) -> str:
    """Write the PNG atomically; return a markdown snippet embedding it (shown behind a click if large)."""
    atomic_write_bytes(Path(path), png)
    return png_md(png, alt)
