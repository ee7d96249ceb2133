"""The library pieces behind filter_ground_truth's and filter_report's numbers: the oracle's usage summed over
materializations (a rerun answered by the journal adds nothing), per-dimension label statistics, and the report's
cost table (oracle as run, priced as a reference model, a labels file, the trained scorer)."""

import math

import pytest

from distillery_assets.filters.ground_truth import accumulate_usage, dimension_stats
from distillery_assets.filters.report import cost_lines

RUN = {"requests": 10, "cache_hits": 2, "provider_calls": 9, "input_tokens": 8000, "output_tokens": 800,
       "cost_usd": 0.01}


def test_usage_adds_up_over_runs_and_keeps_the_first_oracle():
    first = accumulate_usage({}, RUN, 8, 4.0, {"provider": "openai", "model": "m"})
    assert first["total"] == {**RUN, "documents_asked": 8, "oracle_seconds": 4.0}
    # a rerun answered from the journal: cache hits only, nothing asked, no oracle named
    again = accumulate_usage(first, {"requests": 10, "cache_hits": 10}, 0, 0.0, {})
    assert again["total"]["documents_asked"] == 8 and again["total"]["cost_usd"] == pytest.approx(0.01)
    assert again["total"]["requests"] == 20 and again["total"]["cache_hits"] == 12
    assert again["oracle"] == {"provider": "openai", "model": "m"} and again["last_run"]["cache_hits"] == 10


def test_dimension_stats_are_mean_std_min_max_per_dimension():
    records = [{"scores": {"a": 1, "b": 4}}, {"scores": {"a": 3, "b": 4}}]
    assert dimension_stats(records, ["a", "b"]) == [("a", 2.0, 1.0, 1, 3), ("b", 4.0, 0.0, 4, 4)]


def test_costs_of_an_oracle_run_a_reference_price_and_the_scorer():
    total = {"documents_asked": 4, "input_tokens": 4000, "output_tokens": 600, "cost_usd": 0.002,
             "oracle_seconds": 2.0}
    lines = cost_lines(total, {"provider": "openai", "model": "gpt-4o-mini"}, labels_mode=False,
                       scorer_docs_per_s=100.0, reference=("openai", "gpt-4o-mini"), dollars_per_hour=0.05)
    assert [c.what for c in lines] == ["oracle as run (openai gpt-4o-mini)", "oracle priced as gpt-4o-mini",
                                       "trained scorer (CPU)"]
    ran, ref, scorer = lines
    assert ran.dollars_per_1000 == 0.5 and ran.docs_per_s == 2.0
    assert ran.note == "1000 prompt + 150 completion tokens per document"
    # list price of gpt-4o-mini: $0.15 / $0.60 per million tokens
    assert ref.dollars_per_1000 == pytest.approx((1000 * 0.15 + 150 * 0.60) / 1e6 * 1000)
    assert scorer.dollars_per_1000 == round(0.05 / 3600 / 100 * 1000, 6) and scorer.docs_per_s == 100.0
    local = cost_lines(total, {"provider": "local", "model": "x"}, labels_mode=False, scorer_docs_per_s=None,
                       reference=("openai", "gpt-4o-mini"), dollars_per_hour=0.05)
    assert len(local) == 2 and local[0].note.endswith("; a local model costs no API money")


def test_a_labels_file_costs_nothing_and_no_usage_gives_no_oracle_line():
    labels = cost_lines({}, {}, labels_mode=True, scorer_docs_per_s=None, reference=("openai", "gpt-4o-mini"),
                        dollars_per_hour=0.05)
    assert [(c.what, c.dollars_per_1000) for c in labels] == [("oracle (labels file)", None)]
    assert cost_lines({}, {}, labels_mode=False, scorer_docs_per_s=None, reference=("openai", "gpt-4o-mini"),
                      dollars_per_hour=0.05) == []
    assert not math.isinf(cost_lines({}, {}, labels_mode=False, scorer_docs_per_s=5.0, reference=("a", "b"),
                                     dollars_per_hour=0.05)[0].dollars_per_1000)
