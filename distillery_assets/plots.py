"""Plots for asset metadata: one chart description, drawn as a labelled image the Dagster UI shows in place
and as a full-size PNG for files and reports.

Dagster renders a markdown metadata entry on the asset page only while it is shorter than
:data:`INLINE_MD_LIMIT` characters; longer entries hide behind "Show Markdown". A chart is described once
as a :class:`Chart` (title, axis labels, :class:`Series` with their legend labels) and drawn by:

* :func:`chart_md`: a small SVG (text stays text, so a title, axis labels, tick values and a legend cost
  a few hundred characters) as a markdown image under the limit; series are thinned until it fits;
* :func:`chart_png`: the same chart full size through matplotlib (``save_png`` writes it atomically).

Every pipeline uses them (fine-tune loss curves, theme keyword histogram, thyme and filter training
curves)::

    chart = Chart("Loss per epoch", "epoch", "loss", [Series("train", train, x=epochs),
                                                      Series("validation", val, x=epochs)])
    metadata["loss_curves"] = dg.MetadataValue.md(chart_md(chart))
    png = chart_png(chart)

:func:`pyplot` is the one matplotlib set-up (figures with several axes draw on it directly);
:func:`tiny_png` / :func:`inline_md` draw an arbitrary ``draw(ax)`` small as a quantised PNG (the fallback
of :func:`chart_md` when even the thinnest SVG would not fit).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from distillery_assets.io import atomic_write_bytes
from distillery_assets.markdown import INLINE_MD_LIMIT  # re-exported: the one limit, defined beside md_table

WHITE, GREY = "#ffffff", "#6e6e6e"
BLUE, RED, GREEN, ORANGE = "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"
PURPLE, BROWN, BLACK = "#9467bd", "#8c564b", "#222222"
PALETTE = (BLUE, RED, GREEN, ORANGE, PURPLE, BROWN, GREY)
"""Colours given in order to series that name none."""


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


# ------------------------------------------------------------------------------------------- charts

@dataclass(frozen=True)
class Series:
    """One labelled series of a :class:`Chart` (dashed ones are marked ``--`` in the legend). ``style``:
    ``line`` (``points`` marks each value in the full-size PNG), ``dashed``,
    ``bar`` (one bar per x) or ``hline`` (a horizontal reference line at ``y[0]``, e.g. a baseline)."""

    label: str
    y: Sequence[float]
    x: Sequence[float] | None = None
    """Defaults to 1..n."""
    colour: str | None = None
    style: str = "line"
    points: bool = False

    def xs(self) -> list[float]:
        return list(self.x) if self.x is not None else list(range(1, len(self.y) + 1))


@dataclass(frozen=True)
class Chart:
    """What a chart shows: a title, both axis labels and labelled series (the legend)."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    logy: bool = False
    xticklabels: Sequence[str] | None = None
    """Category names for bar charts (one per x position 0..n-1)."""
    horizontal: bool = False
    """Bars drawn sideways, each named and valued at its left (one ``bar`` series, names in
    ``xticklabels``; the values are read along the x axis, ``xlabel``): for many long category names."""
    colours: Sequence[str] = field(default=PALETTE)

    def coloured(self) -> list[Series]:
        """The series, each with its colour (the palette in order for those that name none)."""
        out, palette = [], iter(self.colours)
        for s in self.series:
            out.append(s if s.colour else Series(s.label, s.y, s.x, next(palette, GREY), s.style, s.points))
        return out

    def describe(self) -> str:
        """The chart in words: the image's alt text."""
        return f"{self.title}: {', '.join(s.label for s in self.series)} ({self.ylabel} by {self.xlabel})"


def _num(v: float) -> str:
    """A tick value in at most 3 significant digits."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}" if a < 1e6 else f"{v:.3g}"
    return f"{v:.3g}"


def _thin(xs: list[float], ys: list[float], most: int | None) -> tuple[list[float], list[float]]:
    if most is None or len(xs) <= most:
        return xs, ys
    step = len(xs) / most
    keep = sorted({int(i * step) for i in range(most)} | {len(xs) - 1})
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _svg_colour(colour: str) -> str:
    """``#rrggbb`` as the nearest ``#rgb`` (a third of the characters in the data URI)."""
    r, g, b = _rgb(colour)
    return "#" + "".join(f"{round(c / 17):x}" for c in (r, g, b))


def _path(points: list[tuple[int, int]]) -> str:
    """An SVG path through ``points``: the first absolute, the rest relative (the shortest spelling)."""
    (x, y), rest = points[0], points[1:]
    out = [f"M{x} {y}"]
    if rest:
        steps = []
        for nx, ny in rest:
            steps.append(f"{nx - x} {ny - y}")
            x, y = nx, ny
        out.append("l" + " ".join(steps).replace(" -", "-"))
    return "".join(out)


LEGEND_LINE_CHARS = 52
"""Characters of legend on one line of the inline SVG (about the plot's width at its font size)."""


def _escape(body: str) -> str:
    return body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chart_svg(chart: Chart, *, most_points: int | None = None, shown_width: int = 400) -> str:
    """The chart as a compact SVG document: white background, title, a legend row in the series' colours
    (dashed series marked ``--``), axis labels (the x label with the first and last x value), the lowest and
    highest y value; drawn on a 200-unit-wide grid shown ``shown_width`` pixels wide; ``most_points`` thins
    each series to that many points. Text is placed from an estimate of its width (no anchoring attributes:
    every character counts in a data URI)."""
    if chart.horizontal:
        return _barh_svg(chart, shown_width)
    series = chart.coloured()
    ys = [v for s in series for v in s.y if v is not None and math.isfinite(v) and (not chart.logy or v > 0)]
    xs = [v for s in series if s.style != "hline" for v in s.xs()]
    ys, xs = ys or [0.0, 1.0], xs or [0.0, 1.0]
    bars = any(s.style == "bar" for s in series)
    lo, hi = (min(0.0, min(ys)) if bars and not chart.logy else min(ys)), max(ys)
    if chart.logy:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi == lo:
        hi, lo = hi + (abs(hi) or 1) * 0.05, lo - (abs(lo) or 1) * 0.05
    x0, x1 = min(xs), max(xs)
    if bars:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if x1 == x0:
        x1, x0 = x1 + 1, x0 - 1

    lines: list[list[tuple[str, str]]] = [[]]  # the legend: (label, colour), as few lines as fit the width
    used = 0
    for s in series:
        label = ("-- " if s.style in ("dashed", "hline") else "") + s.label
        if lines[-1] and used + len(label) > LEGEND_LINE_CHARS:
            lines.append([])
            used = 0
        lines[-1].append((label, _svg_colour(s.colour or GREY)))
        used += len(label) + 1
    lo_label, hi_label = (10 ** lo, 10 ** hi) if chart.logy else (lo, hi)
    lo_text, hi_text = _num(lo_label), _num(hi_label)
    width = 200
    left = max(14, 11 + round(CHAR_W * max(len(lo_text), len(hi_text))))
    right, top = width - 3, 9 + 7 * len(lines)
    bottom = top + 62
    height = bottom + 15

    def px(x: float) -> int:
        return round(left + (x - x0) / (x1 - x0) * (right - left))

    def py(y: float) -> int:
        y = math.log10(y) if chart.logy else y
        return round(bottom - (y - lo) / (hi - lo) * (bottom - top))

    def text(x, y, body, extra=""):
        return f"<text x='{x}' y='{y}'{extra}>{_escape(body)}</text>"

    def centred(x: float, body: str) -> int:
        return max(0, round(x - CHAR_W * len(body) / 2))

    labels = list(chart.xticklabels or [])
    first_x, last_x = ((labels[0], labels[-1]) if labels else (_num(min(xs)), _num(max(xs))))
    xlabel, ymid = f"{chart.xlabel} ({first_x} to {last_x})", (top + bottom) // 2
    ylabel_start = min(height, round(ymid + CHAR_W * len(chart.ylabel) / 2))
    parts = [_svg_open(width, height, shown_width), f"<path d='M{left} {top}V{bottom}H{right}' stroke='gray'/>"]
    for s in series:
        colour = _svg_colour(s.colour or GREY)
        if s.style == "hline":
            parts.append(f"<path d='M{left} {py(s.y[0])}H{right}' stroke='{colour}' stroke-dasharray='3'/>")
        elif s.style == "bar":  # each bar a vertical stroke as wide as the bar
            w = max(1, round((right - left) / (x1 - x0) * 0.8))
            d = "".join(f"M{px(x)} {bottom}V{py(y)}" for x, y in zip(s.xs(), s.y) if y)
            parts.append(f"<path d='{d}' stroke='{colour}' stroke-width='{w}'/>")
        else:
            tx, ty = _thin(s.xs(), list(s.y), most_points)
            pts = [(px(x), py(y)) for x, y in zip(tx, ty)
                   if y is not None and math.isfinite(y) and (not chart.logy or y > 0)]
            if pts:
                dash = " stroke-dasharray='3'" if s.style == "dashed" else ""
                parts.append(f"<path d='{_path(pts)}' stroke='{colour}'{dash}/>")
    parts += [text(centred(width / 2, chart.title), 7, chart.title),
              *(f"<text x='{left}' y='{14 + 7 * i}'>"
                + " ".join(f"<tspan fill='{c}'>{_escape(label)}</tspan>" for label, c in line) + "</text>"
                for i, line in enumerate(lines)),
              text(left - 2 - round(CHAR_W * len(lo_text)), bottom, lo_text),
              text(left - 2 - round(CHAR_W * len(hi_text)), top + 5, hi_text),
              text(centred((left + right) / 2, xlabel), height - 2, xlabel),
              text(6, ylabel_start, chart.ylabel, f" transform='rotate(-90 6 {ylabel_start})'"), "</svg>"]
    return "".join(parts)


CHAR_W = 3.1
"""Estimated width of one character of the 6-unit sans-serif text (for placing text without anchoring)."""


def _svg_open(width: int, height: int, shown_width: int) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{shown_width}' "
            "style='background:#fff'><style>text{font:6px sans-serif}path{fill:none}</style>")


def _barh_svg(chart: Chart, shown_width: int) -> str:
    """A horizontal bar chart: one row per category, its name and value at the left."""
    s = chart.coloured()[0]
    names, values = list(chart.xticklabels or [str(x) for x in s.xs()]), [float(v or 0) for v in s.y]
    width, row = 200, 8
    height = 22 + row * len(values)
    left = min(120, 6 + round(CHAR_W * max((len(n) + 1 + len(_num(v)) for n, v in zip(names, values)), default=4)))
    right, top, hi = width - 4, 11, max(values + [1e-12])
    colour = _svg_colour(s.colour or GREY)
    bars = "".join(f"M{left} {top + row * i + row // 2}h{max(1, round(v / hi * (right - left)))}"
                   for i, v in enumerate(values))  # each bar a horizontal stroke as thick as the bar
    names_svg = "".join(f"<text x='{left - 2}' y='{top + row * i + 6}'>{_escape(n)} {_num(v)}</text>"
                        for i, (n, v) in enumerate(zip(names, values)))
    mid = width // 2
    return "".join([_svg_open(width, height, shown_width),
                    f"<path d='{bars}' stroke='{colour}' stroke-width='{row - 2}'/>",
                    f"<path d='M{left} {top}V{height - 11}' stroke='gray'/>",
                    f"<g text-anchor='middle'><text x='{mid}' y='7'>{_escape(chart.title)}</text>"
                    f"<text x='{mid}' y='{height - 2}'>{_escape(chart.xlabel)}</text></g>",
                    f"<g text-anchor='end'>{names_svg}</g></svg>"])


def svg_md(svg: str, alt: str) -> str:
    """A markdown image embedding ``svg`` as a ``data:`` URI: percent-encoded, not base64 (a third shorter), in
    a ``<...>`` destination so its spaces may stay, its ``<`` and ``>`` backslash-escaped (markdown turns the
    destination back into a percent-encoded ``src``)."""
    alt = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
    uri = quote(svg, safe=SVG_SAFE).replace("%3C", "\\<").replace("%3E", "\\>")
    return f"![{alt}](<data:image/svg+xml,{uri}>)"


SVG_SAFE = " '=/:;,.-_()!*~@+${}"
"""Characters left as they are in the data URI (``#``, ``%``, ``?``, ``\\`` and non-ASCII are escaped)."""


def chart_md(chart: Chart, *, limit: int = INLINE_MD_LIMIT) -> str:
    """The chart as one markdown image shorter than ``limit`` (what the asset page shows without a click):
    the SVG with every point, else without its alt text, else with each series thinned until it fits, else a
    small PNG (a legend in its alt text only)."""
    longest = max((len(s.y) for s in chart.series), default=0)
    for most in (None, 60, 40, 25, 15, 10, 6):
        if most is not None and most >= longest:
            continue
        svg = chart_svg(chart, most_points=most)
        for alt in (chart.title, ""):  # the alt text is the title the image already shows: the first to go
            md = svg_md(svg, alt)
            if len(md) < limit:
                return md
    return inline_md(_draw_chart(chart), chart.describe(), colours=[s.colour for s in chart.coloured()][:6])


def _draw_chart(chart: Chart, *, legend: bool = False):
    def draw(ax) -> None:
        for s in chart.coloured():
            if s.style == "hline":
                ax.axhline(s.y[0], color=s.colour, linestyle="--", lw=1, label=s.label)
            elif s.style == "bar" and chart.horizontal:
                ax.barh(list(chart.xticklabels or s.xs()), list(s.y), color=s.colour, label=s.label)
                ax.invert_yaxis()
            elif s.style == "bar":
                ax.bar(s.xs(), list(s.y), color=s.colour, label=s.label)
            else:
                ax.plot(s.xs(), list(s.y), marker="o" if s.points else None, color=s.colour, lw=1.5, markersize=3,
                        linestyle="--" if s.style == "dashed" else "-", label=s.label)
        if chart.logy:
            ax.set_yscale("log")
        if chart.xticklabels and not chart.horizontal:
            labels = list(chart.xticklabels)
            ax.set_xticks(range(len(labels)), labels if len(labels) <= 12 else
                          [lab if i % 2 == 0 else "" for i, lab in enumerate(labels)])
        if legend:
            ax.set_xlabel(chart.xlabel)
            ax.set_ylabel(chart.ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return draw


def chart_png(chart: Chart, *, figsize: tuple[float, float] = (6.4, 3.6), dpi: int = 110) -> bytes:
    """The chart full size (title, axis labels, legend, grid) as PNG bytes."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 (matplotlib loads only when a chart is drawn)

    def draw(ax) -> None:
        _draw_chart(chart, legend=True)(ax)
        if not chart.xticklabels and all(float(x).is_integer() for s in chart.series for x in s.xs()):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    return figure_png(draw, figsize=figsize, dpi=dpi, title=chart.title)
