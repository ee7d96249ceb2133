"""Numbers in the filter report's tables: small values keep their digits."""

from distillery_assets.filters.metrics import fmt


def test_small_values_are_not_rounded_to_zero():
    assert fmt(3e-4) == "0.0003" and fmt(0.00234) == "0.00234"
    assert fmt(1.0543) == "1.054" and fmt(0.0) == "0.000" and fmt(None) == "-" and fmt(float("nan")) == "nan"
    assert fmt(20) == "20"
