"""Numbers in the filter report's tables: small values keep their digits."""

from distillery_assets.filters.metrics import fmt


def test_small_values_are_not_rounded_to_zero():
    assert fmt(3e-4) == "0.0003" and fmt(0.00234) == "0.00234"
    assert fmt(1.0543) == "1.054" and fmt(0.0) == "0.000" and fmt(None) == "-" and fmt(float("nan")) == "nan"
    assert fmt(20) == "20"


def _inputs(kept: str, model_mae: float):
    from distillery_assets.filters.report import ReportInputs

    results = {"model": {"mae": model_mae}, "mean": {"mae": 2.0}, "ridge": {"mae": 1.5}}
    meta = {"training_mode": kept, "test_examples": 62, "recipe": "auto",
            "candidates": [{"name": "ridge", "status": "trained", "kept": kept == "ridge", "val_mae": 1.4,
                            "test_mae": 1.5},
                           {"name": "mlp", "status": "trained", "kept": kept == "mlp", "val_mae": 1.3,
                            "test_mae": 1.13, "best_epoch": 4, "epochs_run": 19, "max_epochs": 200},
                           {"name": "full_finetune", "status": "skipped", "note": "not a default on CPU"}]}
    return ReportInputs("f", "1", "d", [("a", 1.0, "a")], [("hi", 5.0), ("lo", 0.0)], [], meta, results, ".")


def test_conclusions_say_what_happened_in_words_a_reader_cannot_misread():
    from distillery_assets.filters.metrics import candidate_rows, mae_sentence, relative
    from distillery_assets.filters.report import conclusions, method_sentence

    assert relative(1.13, 2.0) == "44% below" and relative(1.6, 1.5) == "7% above" and relative(1.0, 1.0) == "equal to"
    won = " ".join(conclusions(_inputs("mlp", 1.13)))
    assert "test MAE 1.130 on 62 test documents, 44% below the mean predictor (2.000), 25% below ridge" in won
    assert "learned from the labels" in won and "+" not in won
    ridge = " ".join(conclusions(_inputs("ridge", 1.5)))
    assert "equal to ridge" in ridge and "the kept scorer is that ridge" in ridge and "learned" not in ridge
    lost = " ".join(conclusions(_inputs("mlp", 1.6)))
    assert "won on validation but not on test" in lost and "learned" not in lost
    assert mae_sentence({"model": {"mae": 3.0}, "mean": {"mae": 2.0}, "ridge": {"mae": 2.0}}).startswith(
        "test MAE 3.000, 50% above the mean predictor")
    method = method_sentence(_inputs("mlp", 1.13).metadata)
    assert "ridge, mlp compared by validation MAE" in method and "(full_finetune not run)" in method
    assert "kept mlp (best epoch 4 of 19 run" in method
    rows = candidate_rows(_inputs("mlp", 1.13).metadata["candidates"], 2.0, 1.5)
    assert [r[1] for r in rows] == ["compared", "kept", "skipped"] and rows[1][5] == "25% below"
