"""Loss table/plot and model card; GGUF header inspection on the bundled SmolLM2 file; file naming."""

import pytest

from distillery_assets.embedded import smollm2_gguf_path
from distillery_assets.training.config import base_short_name, gguf_file_name
from distillery_assets.training.gguf_tools import inspect_gguf, quantize_gguf
from distillery_assets.training.report import loss_plot_png, loss_table_md, model_card, save_loss_plot

METRICS = {"role": "poet", "profile": "cpu_small", "base_val_loss": 4.98, "val_loss": 0.30, "train_loss": 0.43,
           "epochs": [{"epoch": 1, "steps": 8, "train_loss": 2.86, "val_loss": 0.71},
                      {"epoch": 2, "steps": 16, "train_loss": 0.43, "val_loss": 0.30}],
           "train": {"examples": 32, "truncated": 1}, "val": {"examples": 8, "truncated": 0}, "device": "cpu"}
EXPORT = {"gguf_file": "SmolLM2-135M-Instruct-poet-Q4_K_M.gguf", "quant": "Q4_K_M", "ppl_merged": 1.35,
          "ppl_gguf": 1.42, "ppl_degradation": 0.048, "gguf": {"tensor_types": {"Q5_0": 166, "Q4_K": 16}},
          "chat": {"finish_reason": "stop", "completion_tokens": 18}}


def test_loss_table_has_base_row_and_one_row_per_epoch():
    table = loss_table_md(METRICS)
    lines = table.splitlines()
    assert lines[2].startswith("| base |") and "4.9800" in lines[2]
    assert len(lines) == 5 and "| 2 | 16 | 0.4300 | 0.3000 |" in table


def test_loss_plot_is_a_png_and_is_embedded_inline(tmp_path):
    assert loss_plot_png(METRICS)[:8] == b"\x89PNG\r\n\x1a\n"
    path, md = save_loss_plot(METRICS, tmp_path / "loss.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and md.startswith("![loss curves](data:image/png;base64,")


def test_model_card_states_base_data_settings_and_metrics():
    card = model_card(role="poet", base_model="meta-llama/Llama-3.1-8B-Instruct", base_note="stands in for X",
                      data={"train": "train.jsonl", "val": "valid.jsonl"}, settings={"lora": {"r": 64}},
                      training=METRICS, export=EXPORT, ran_on="modal GPU")
    assert "base_model: meta-llama/Llama-3.1-8B-Instruct" in card and "stands in for X" in card
    assert "`train.jsonl`" in card and '"r": 64' in card and "modal GPU" in card
    assert "4.9800 -> fine-tuned 0.3000" in card and "+4.8%" in card and "`stop`" in card


def test_inspect_reads_type_template_and_end_of_turn_from_the_bundled_gguf():
    info = inspect_gguf(smollm2_gguf_path())
    assert info["file_type"] == "Q4_1" and info["architecture"] == "llama"
    assert info["has_chat_template"] and info["eos_token"] == "<|im_end|>"
    assert info["tensor_types"].get("Q4_1", 0) > 100 and info["bytes"] > 50_000_000


def test_gguf_names_follow_base_role_quant():
    assert base_short_name("meta-llama/Llama-3.1-8B-Instruct") == "Llama-3.1-8B-Instruct"
    assert gguf_file_name("embedded", "theme", "Q4_K_M") == "SmolLM2-135M-Instruct-theme-Q4_K_M.gguf"


def test_unknown_quant_type_is_refused_before_running(tmp_path):
    with pytest.raises(ValueError, match="Q9_Z"):
        quantize_gguf(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q9_Z")


def test_inline_loss_plot_fits_where_the_ui_shows_markdown_without_a_click():
    from distillery_assets.training.report import INLINE_MD_LIMIT, loss_inline_md

    md = loss_inline_md(METRICS)
    assert md.startswith("![poet LoRA loss per epoch") and "data:image/svg+xml," in md and len(md) < INLINE_MD_LIMIT
    many = dict(METRICS, epochs=[{"epoch": i, "steps": 8 * i, "train_loss": 3 / i, "val_loss": 2 / i} for i in range(1, 21)])
    assert len(loss_inline_md(many)) < INLINE_MD_LIMIT


def test_card_and_summary_report_a_fallback_quant_with_every_attempt_and_the_tokens():
    from distillery_assets.training.report import export_summary

    export = dict(EXPORT, quant="Q8_0", primary_quant="Q4_K_M", fallback_quants=["Q5_K_M", "Q8_0"], ppl_limit=0.05,
                  gguf_file="SmolLM2-135M-Instruct-poet-Q8_0.gguf", gguf_bytes=144_800_000, ppl_tokens=3038,
                  ppl_degradation=0.002, ppl_degradation_ok=True, ppl_intermediate_gguf=None,
                  quant_attempts=[{"quant": q, "ppl_gguf": 1.4, "ppl_degradation": d, "within_limit": d <= 0.05,
                                   "gguf_bytes": b, "ppl_by_set": {}}
                                  for q, d, b in (("Q4_K_M", 0.08, 105e6), ("Q5_K_M", 0.16, 112e6), ("Q8_0", 0.002, 145e6))],
                  ppl_sets=[{"name": "validation", "source": "valid.jsonl", "examples": 1, "tokens": 95,
                             "ppl_merged": 1.746, "ppl_gguf": 1.739, "ppl_f16": None},
                            {"name": "held-out", "source": "training/heldout/poetry_teaching.txt", "examples": 12,
                             "tokens": 2943, "ppl_merged": 54.17, "ppl_gguf": 54.28, "ppl_f16": None}])
    card = model_card(role="poet", base_model="b", base_note="", data={"train": "t"}, settings={}, training=METRICS,
                      export=export, ran_on="cpu")
    assert "fallback **Q8_0** was kept" in card and "| Q4_K_M | 1.4 | +8.00% | no | 105 |  |" in card
    assert "| Q8_0 | 1.4 | +0.20% | yes | 145 | kept |" in card and "held-out (2943 tokens)" in card
    text = export_summary(export)
    assert "Q8_0 (fallback; primary Q4_K_M)" in text and "over 3038 tokens" in text and "[PASS] perplexity" in text
