"""Model cards: Hub metadata in the YAML header, the facts in the body."""

from huggingface_hub import ModelCard

from distillery_assets.hub import ModelCardInfo, render_model_card


def _model(**kw):
    base = dict(repo_id="me/poet-gguf", title="Poet", description="Writes short poems.", asset_key="poet_gguf",
                base_model="HuggingFaceTB/SmolLM2-135M-Instruct", datasets=["me/poet-pairs"],
                gguf_file="poet-Q4_K_M.gguf", quantization="Q4_K_M",
                settings={"lora_r": 64, "learning_rate": 2e-4, "epochs": 3},
                metrics={"eval_loss": 1.23456, "perplexity": 3.4}, system_prompt="You're a poet | brief",
                run_id="abc123")
    base.update(kw)
    return ModelCardInfo(**base)


def test_model_card_metadata_and_sections():
    text = render_model_card(_model())
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["me/poet-pairs"]
    assert card.data.library_name == "gguf" and "gguf" in card.data.tags and "distillery" in card.data.tags
    assert "| lora_r | 64 |" in text and "| learning_rate | 0.0002 |" in text
    assert "| eval_loss | 1.235 |" in text and "| perplexity | 3.4 |" in text
    assert "hf download me/poet-gguf poet-Q4_K_M.gguf" in text
    assert "llama-cli -m poet-Q4_K_M.gguf -cnv -p 'You'\"'\"'re a poet | brief'" in text
    assert 'Llama.from_pretrained(repo_id="me/poet-gguf", filename="poet-Q4_K_M.gguf"' in text
    assert "run `abc123`" in text
    assert "## Loss" not in text


def test_extra_sections_go_before_limitations():
    text = render_model_card(_model(extra_markdown="## Loss\n\n| epoch | loss |\n|---|---|\n| 1 | 2.0 |"))
    assert text.index("## Loss") < text.index("## Limitations")
    assert "| 1 | 2.0 |" in text


def test_adapter_card_without_metrics_says_so():
    text = render_model_card(_model(gguf_file=None, quantization=None, metrics={}, settings={}))
    assert ModelCard(text).data.library_name == "peft"
    assert "No evaluation metrics were recorded" in text and "No training settings were recorded" in text
    assert 'PeftModel.from_pretrained(base, "me/poet-gguf")' in text and "llama-cli" not in text
