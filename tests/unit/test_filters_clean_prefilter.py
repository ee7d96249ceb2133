"""Candidate cleaning (HTML, invisible marks, NFKC, whitespace) and the prefilter rules as data."""

from __future__ import annotations

import json

import pytest

from distillery_assets.filters.clean import clean_document, clean_text, looks_like_html
from distillery_assets.filters.config import PrefilterRules, load_filter
from distillery_assets.filters.prefilter import PASSED, Prefilter, host_of
from distillery_assets.paths import config_dir
from distillery_assets.theme.keywords import count_reference, load_keyword_sets
from tests.support.filters_defs import SHIPPED


def test_html_is_stripped_with_scripts_and_entities():
    raw = ("<html><head><title>T</title><style>p{color:red}</style></head><body><h1>Heading</h1>"
           "<p>First &amp; <b>bold</b> para.</p><script>alert('x')</script><p>Second&nbsp;one &#8217;s</p>"
           "<!-- comment --></body></html>")
    assert looks_like_html(raw)
    out = clean_text(raw)
    assert out == "Heading\n\nFirst & bold para.\n\nSecond one \u2019s"
    assert "alert" not in out and "color" not in out and "comment" not in out


def test_plain_text_with_angle_brackets_is_not_treated_as_html():
    text = "If a < b and c > d, then <<quoted>> stays."
    assert not looks_like_html(text)
    assert clean_text(text) == text


def test_zero_width_bidi_and_controls_removed_and_nfkc():
    text = "Zero\u200bwidth\u200d join\ufeff, \u202eRLO\u202c \u2066iso\u2069 \u200fmark; \uff21\uff22 \ufb01ne\u00a0x\x07y"
    assert clean_text(text) == "Zerowidth join, RLO iso mark; AB fine x y"


def test_whitespace_normalised_and_document_fields():
    assert clean_text("  a \t b  \r\n\r\n\r\n\r\n c  ") == "a b\n\nc"
    doc = clean_document({"id": 1, "title": " A\n<b>t</b> ", "content": "x\u200by", "url": "u"})
    assert doc == {"id": 1, "title": "A t", "content": "xy", "url": "u"}
    assert clean_text(None) == "" and clean_text("") == ""


def _rules(*rules) -> PrefilterRules:
    return PrefilterRules.model_validate({"rules": list(rules)})


def _doc(content, title="", url="", id="d"):
    return {"id": id, "title": title, "content": content, "url": url}


def test_each_rule_kind_blocks_with_its_reason():
    pf = Prefilter(_rules(
        {"kind": "min_length", "reason": "too_short", "chars": 20},
        {"kind": "excluded_domains", "reason": "bad_host", "domains": ["example.com"]},
        {"kind": "pass_keywords", "reason": "explains", "keywords": ["for example"]},
        {"kind": "block_keywords", "reason": "shop", "keywords": ["buy now", "cart"], "min_hits": 2},
        {"kind": "regex", "reason": "finance", "patterns": [r"\bipo\b", r"quarterly earnings"],
         "exceptions": [r"worker co-?op"]},
    ))
    long = "x " * 20
    cases = [
        (_doc("short"), False, "too_short", 0),
        (_doc(long, url="https://www.news.example.com/a"), False, "bad_host", 1),
        (_doc(long, url="https://notexample.com/a"), True, PASSED, None),
        (_doc(long + " buy now, for example, cart"), True, "explains", 2),  # pass rule comes first
        (_doc(long + " BUY NOW and add to Cart"), False, "shop", 3),
        (_doc(long + " buy now only"), True, PASSED, None),  # one hit, min_hits 2
        (_doc(long, title="The IPO of the year"), False, "finance", 4),
        (_doc(long + " quarterly earnings of a worker coop"), True, PASSED, None),  # exception
        (_doc(long + " shopping cartel"), True, PASSED, None),  # whole words only
    ]
    decisions = pf.run([d for d, *_ in cases])
    for (doc, passed, reason, rule), got in zip(cases, decisions):
        assert (got.passed, got.reason, got.rule) == (passed, reason, rule), (doc, got)
    summary = Prefilter.summarize(decisions, expected_pass_rate=0.5).as_dict()
    assert summary["total"] == 9 and summary["passed"] == 5 and summary["pass_rate"] == round(5 / 9, 4)
    assert summary["by_reason"]["passed"] == 4 and summary["pass_rate_minus_expected"] == round(5 / 9 - 0.5, 4)


def test_disabled_prefilter_passes_everything():
    pf = Prefilter(_rules({"kind": "min_length", "reason": "too_short", "chars": 1000}), enabled=False)
    assert pf.decide(_doc("tiny")).passed


def test_host_of():
    assert host_of("https://WWW.Example.com:8080/x?y") == "example.com"
    assert host_of("example.org/path") == "example.org" and host_of("") == ""


def test_theme_keywords_rule_is_the_theme_pipelines_filter(monkeypatch):
    d = load_filter(SHIPPED / "deep_red_theme" / "v1")
    pf = Prefilter(d.prefilter)
    sets = load_keyword_sets(config_dir() / "theme" / "theme_keywords.json")
    texts = ["The comrades of the commune built a rocket to explore the stars. " * 4,
             "A quiet afternoon with tea and biscuits by the window, nothing else happened at all. " * 4,
             "The revolution began; " * 20]
    decisions = pf.run([_doc(t, id=str(i)) for i, t in enumerate(texts)])
    for text, dec in zip(texts, decisions):
        total = count_reference(text, sets)["total"]
        assert dec.passed == (total >= 2), (total, dec)
        if not dec.passed:
            assert dec.reason == "too_few_theme_keywords" and str(total) in dec.detail
    v2 = Prefilter(load_filter(SHIPPED / "deep_red_theme" / "v2").prefilter)
    two = "A long game of chess. " * 20
    assert count_reference(two, sets)["total"] == 2
    assert pf.decide(_doc(two)).passed and not v2.decide(_doc(two)).passed


def test_shipped_educational_prefilter_runs():
    pf = Prefilter(load_filter(SHIPPED / "educational_value" / "v1").prefilter)
    assert pf.decide(_doc("tiny")).reason == "content_too_short"
    text = "Photosynthesis is the process by which plants turn light into sugar. " * 6
    assert pf.decide(_doc(text)).passed
    assert pf.decide(_doc(text + " All rights reserved.")).reason == "boilerplate"
    assert json.dumps(pf.decide(_doc(text)).to_dict())
