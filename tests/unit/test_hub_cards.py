"""Model and dataset cards: Hub metadata in the YAML header, the facts in the body."""

from huggingface_hub import DatasetCard, ModelCard

from distillery_assets.hub import DatasetCardInfo, ModelCardInfo, SplitInfo, render_dataset_card, render_model_card
from distillery_assets.hub.cards import size_category


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


def test_dataset_card_splits_fields_and_size():
    info = DatasetCardInfo(
        repo_id="me/poet-pairs", title="Poet pairs", description="Brief/poem pairs.", asset_key="poet_splits",
        splits=[SplitInfo(name="train", rows=900, path="train.jsonl"), SplitInfo(name="val", rows=150, path="val.jsonl")],
        fields={"messages": "system, user and assistant turns"}, example={"messages": [{"role": "user", "content": "hi"}]},
        provenance="Poems by SmolLM2 from briefs written by the educator model.")
    text = render_dataset_card(info)
    card = DatasetCard(text)
    assert card.data.size_categories == ["1K<n<10K"] and card.data.pretty_name == "Poet pairs"
    assert "| train | 900 | `train.jsonl` |" in text and "| val | 150 | `val.jsonl` |" in text
    assert "| `messages` | system, user and assistant turns |" in text
    assert '"content": "hi"' in text and 'load_dataset("me/poet-pairs")' in text
    assert "educator model" in text


def test_size_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]
