"""Text cleaning for filter candidates (stdlib only: ``html``, ``html.parser``, ``unicodedata``).

:func:`clean_text` does, in order:

1. HTML: only when the text looks like markup (a real tag such as ``<p>``, ``</div>``, ``<br/>``), tags are
   dropped, ``<script>``/``<style>``/comments removed with their content, block elements become line
   breaks; entities (``&amp;``, ``&#8217;``) are decoded either way;
2. zero-width characters (ZWSP, ZWNJ, ZWJ, word joiner, BOM, soft hyphen) and BiDi controls (LRM, RLM,
   ALM, LRE/RLE/PDF/LRO/RLO, LRI/RLI/FSI/PDI) removed, other control characters except tab and newline
   replaced by a space;
3. Unicode NFKC normalisation (full-width letters, ligatures, non-breaking spaces become plain ones);
4. whitespace: runs of spaces and tabs collapse to one space, lines are stripped, three or more line
   breaks become a paragraph break (two).

Plain prose (Gutenberg chunks, ``.corpus`` files) is unchanged apart from steps 2-4, so a ``<`` in text is
left alone.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
BIDI_CONTROLS = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_REMOVE = {ord(c): None for c in ZERO_WIDTH + BIDI_CONTROLS}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9]*)(?:\s+[a-zA-Z_:][-\w:.]*(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*\s*/?>")
_HTML_TAGS = frozenset(
    "a abbr article aside b blockquote body br caption cite code dd div dl dt em figcaption figure footer h1 h2 "
    "h3 h4 h5 h6 head header hr html i img li link main meta nav ol p pre q s script section small span strong "
    "style sub sup table tbody td tfoot th thead title tr u ul".split())
_BLOCK = frozenset("address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 "
                   "h6 header hr li main nav ol p pre section table tr ul title".split())
_SKIP = frozenset(("script", "style", "noscript", "template", "head"))


def looks_like_html(text: str) -> bool:
    return any(m.group(1).lower() in _HTML_TAGS for m in _TAG.finditer(text))


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n\n" if tag in ("p", "div", "section", "article", "blockquote", "table")
                              or tag.startswith("h") else "\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def remove_invisible(text: str) -> str:
    return _CONTROL.sub(" ", text.translate(_REMOVE))


def normalize_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def clean_text(text: str | None) -> str:
    if not text:
        return ""
    text = strip_html(text) if looks_like_html(text) else html.unescape(text)
    text = remove_invisible(text)
    text = unicodedata.normalize("NFKC", text)
    text = remove_invisible(text)  # NFKC can map compatibility characters onto controls
    return normalize_whitespace(text)


def clean_document(doc: dict) -> dict:
    """A copy of a document with ``title`` and ``content`` cleaned (other fields as they are)."""
    out = dict(doc)
    out["title"] = normalize_whitespace(clean_text(doc.get("title") or "")).replace("\n", " ")
    out["content"] = clean_text(doc.get("content") or "")
    return out
