"""The one inline-plot helper: charts small enough for the Dagster asset page to show in place."""

import base64

from distillery_assets.plots import BLUE, INLINE_MD_LIMIT, RED, inline_md, tiny_png
from distillery_assets.theme.plots import totals_histogram_inline_md


def _png(md: str) -> bytes:
    return base64.b64decode(md.split("base64,", 1)[1].rstrip(")"))


def test_inline_md_fits_and_is_a_png():
    md = inline_md(lambda ax: ax.plot(range(50), [i * i for i in range(50)], color=BLUE), "curve", colours=[BLUE])
    assert md.startswith("![curve](data:image/png;base64,") and len(md) < INLINE_MD_LIMIT
    assert _png(md)[:8] == b"\x89PNG\r\n\x1a\n"


def test_inline_md_shrinks_or_falls_back():
    def busy(ax):  # many random-ish points: large even when small
        ax.scatter([(i * 7919) % 997 for i in range(3000)], [(i * 104729) % 991 for i in range(3000)], color=RED, s=1)
    md = inline_md(busy, "busy", colours=[RED], fallback="see the file")
    assert len(md) < INLINE_MD_LIMIT
    assert md == "see the file" or md.startswith("![busy](")
    big = tiny_png(busy, [RED], dpi=200, figsize=(8, 4))
    assert len(base64.b64encode(big)) > INLINE_MD_LIMIT  # the full-size chart would not have fitted


def test_theme_histogram_inline_for_twenty_bars():
    hist = {str(i): 1000 // (i + 1) for i in range(20)}
    md = totals_histogram_inline_md(hist, 2)
    assert md.startswith("![chunks by keyword total") and len(md) < INLINE_MD_LIMIT
