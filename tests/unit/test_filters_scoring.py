"""Overall score = weighted sum, then content-type caps and gatekeepers (recorded), tier by threshold."""

from __future__ import annotations

import pytest

from distillery_assets.filters.config import Scoring, load_filter
from distillery_assets.filters.scoring import score, tier_for, tier_index
from tests.support.filters_defs import SHIPPED


def _scoring(**extra) -> Scoring:
    base = {
        "dimensions": {
            "a": {"weight": 0.5, "description": "A", "scale": "0-10"},
            "b": {"weight": 0.3, "description": "B", "scale": "0-10", "gatekeeper": True,
                  "gatekeeper_threshold": 5, "gatekeeper_max_score": 3,
                  "gatekeeper_exception": {"dimension": "c", "threshold": 7, "min_gated_score": 3}},
            "c": {"weight": 0.2, "description": "C", "scale": "0-10"},
        },
        "tiers": {"high": {"threshold": 7, "description": ""}, "mid": {"threshold": 4, "description": ""},
                  "low": {"threshold": 0, "description": ""}},
    }
    base.update(extra)
    return Scoring.model_validate(base)


def test_weighted_sum_and_tiers():
    s = _scoring()
    r = score({"a": 8, "b": 6, "c": 5}, s)
    assert r.weighted == pytest.approx(0.5 * 8 + 0.3 * 6 + 0.2 * 5) and r.overall == r.weighted == 6.8
    assert r.tier == "mid" and r.applied == []
    assert score({"a": 10, "b": 10, "c": 10}, s).tier == "high"
    assert tier_for(7.0, s) == "high" and tier_for(6.9999, s) == "mid" and tier_for(0, s) == "low"
    assert [tier_index(t, s) for t in ("high", "mid", "low")] == [0, 1, 2]


def test_dimension_gatekeeper_and_its_exception():
    s = _scoring()
    r = score({"a": 10, "b": 4, "c": 6}, s)  # b below 5, exception needs c >= 7
    assert r.weighted == pytest.approx(7.4) and r.overall == 3 and r.applied == ["gatekeeper:b"] and r.tier == "low"
    r = score({"a": 10, "b": 4, "c": 7}, s)  # exception holds (c >= 7 and b >= 3)
    assert r.overall == pytest.approx(7.6) and r.applied == []
    r = score({"a": 10, "b": 2, "c": 9}, s)  # exception needs b >= 3
    assert r.overall == 3 and r.applied == ["gatekeeper:b"]


def test_gatekeeper_rules_and_caps():
    s = _scoring(
        gatekeeper_rules={"a": {"threshold": 4, "max_overall_if_below": 2.5}},
        content_type_caps={
            "ads": {"max_score": 2, "triggers": ["buy now"], "exceptions": ["history of"]},
            "fiction": {"max_score": 5, "condition": {"dimension": "a", "below": 6}},
        })
    hi = {"a": 9, "b": 9, "c": 9}
    assert score(hi, s).overall == 9
    r = score(hi, s, text="Please BUY NOW!")
    assert r.overall == 2 and r.applied == ["cap:ads"]
    assert score(hi, s, text="a history of the buy now button").overall == 9  # exception phrase
    assert score(hi, s, content_type="ads", text="a history of").applied == ["cap:ads"]  # the oracle said so
    assert score(hi, s, content_type="fiction").applied == []  # condition a < 6 not met
    r = score({"a": 5, "b": 9, "c": 9}, s, content_type="fiction")
    assert r.overall == 5 and r.applied == ["cap:fiction"]
    r = score({"a": 3, "b": 9, "c": 9}, s, content_type="fiction", text="buy now")
    assert r.applied == ["cap:ads", "cap:fiction", "gatekeeper:a"] and r.overall == 2


def test_missing_dimension_raises():
    with pytest.raises(KeyError, match="missing"):
        score({"a": 1, "b": 1}, _scoring())


def test_deep_red_temporal_gate_caps_overall():
    v1 = load_filter(SHIPPED / "deep_red_theme" / "v1").config.scoring
    v2 = load_filter(SHIPPED / "deep_red_theme" / "v2").config.scoring
    rich = {d: 9 for d in v1.dimensions}
    assert score(rich, v1).tier == "core"
    modern = {**rich, "temporal_fit": 4}
    r = score(modern, v1)
    assert r.overall == 3.0 and r.applied == ["gatekeeper:temporal_fit"] and r.tier == "marginal"
    borderline = {**rich, "temporal_fit": 5}
    assert score(borderline, v1).applied == [] and score(borderline, v2).overall == 2.5
