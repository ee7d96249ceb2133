"""The Hub model card of a trained filter scorer, rendered by the project's one card renderer
(:func:`distillery_assets.hub.cards.render_model_card`): what the scorer reads and returns, its dimensions and
tiers, how it compares with the baselines on the test split, and how to load it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distillery_assets.filters.metrics import (FINEWEB_EDU_F1, candidates_markdown, fmt, mae_sentence,
                                              results_head, results_rows)
from distillery_assets.hub.cards import ModelCardInfo, render_model_card
from distillery_assets.markdown import md_table

SECTIONS = """## How it scores

A document scorer distilled from LLM labels: it reads a document (title, blank line, content; at most
{max_length} tokens) and returns one score per dimension. The overall score is the weighted sum of the
dimensions, then the filter's caps and gatekeepers; the tier is the first whose threshold it reaches.

## Dimensions

{dims_table}

## Tiers

{tiers_table}"""

EVALUATION = """On the held-out test split: {in_words}.

{results_table}
{candidates}
`mean` predicts the training mean for every document; `ridge` is a ridge regression on frozen sentence
embeddings. For scale: FineWeb-Edu's distilled classifier reached F1 {anchor} at its threshold."""

USAGE_HEAD = """The folder holds the encoder (`config.json`, `model.safetensors`, tokenizer), `head.safetensors` and
`filter_model.json`. With Distillery:

```python
from distillery_assets.filters.score import Scorer

scorer = Scorer("{repo_dir}")        # a local copy: hf download {repo_id} --local-dir {repo_dir}
texts = [scorer.text_of({{"title": "A title", "content": "The document text ..."}})]  # as it was trained
scores = scorer.predict(texts)      # (n, {n_dims}) in the order {dims}
```
"""

USAGE_LORA = """A PEFT adapter on `{base}` (sequence classification, {n_dims} regression outputs):

```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

base = AutoModelForSequenceClassification.from_pretrained("{base}", num_labels={n_dims}, problem_type="regression")
model = PeftModel.from_pretrained(base, "{repo_id}").merge_and_unload()
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
```
"""


def render_filter_card(*, repo_id: str, filter_name: str, filter_version: str, description: str,
                       dims: Sequence[tuple[str, float, str]], tiers: Sequence[tuple[str, float]],
                       metadata: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
                       datasets: Sequence[str] = (), limitations: str | None = None) -> str:
    """README.md for the Hub repository of one filter version's scorer."""
    names = [d[0] for d in dims]
    mode = metadata.get("training_mode", "frozen_head")
    base = str(metadata.get("model_name", ""))
    hub_base = None if base.startswith("embedded:") else base
    if base.startswith("embedded:"):
        hub_base = "sentence-transformers/" + base.split(":", 1)[1]
    usage = (USAGE_LORA if mode == "lora" else USAGE_HEAD).format(
        repo_id=repo_id, repo_dir=repo_id.split("/")[-1], base=base, n_dims=len(names), dims=names)
    settings = {k: metadata[k] for k in ("recipe", "training_mode", "model_name", "max_length", "include_title",
                                         "epochs", "batch_size",
                                         "learning_rate", "train_examples", "val_examples", "test_examples",
                                         "best_epoch", "best_val_mae") if k in metadata}
    sections = SECTIONS.format(
        max_length=metadata.get("max_length", "?"),
        dims_table=md_table([(n, fmt(float(w)), d) for n, w, d in dims], ["dimension", "weight", "description"]),
        tiers_table=md_table([(n, fmt(float(t))) for n, t in tiers], ["tier", "threshold"]))
    cands = metadata.get("candidates") or []
    candidates = (f"\nCandidate heads compared by validation MAE (the kept one is this model):\n\n"
                  f"{candidates_markdown(cands, results)}\n" if cands else "")
    evaluation = EVALUATION.format(anchor=FINEWEB_EDU_F1, in_words=mae_sentence(results, metadata.get("test_examples")),
                                   candidates=candidates, results_table=md_table(
        [[fmt(v) for v in row] for row in results_rows(results, names)], results_head(names)))
    info = ModelCardInfo(
        repo_id=repo_id, title=f"{filter_name} v{filter_version}: distilled scorer", description=description,
        asset_key="filter_model", base_model=hub_base, datasets=list(datasets),
        tags=["filter", "regression", f"filter-{filter_name}"],
        library_name="peft" if mode == "lora" else "transformers", pipeline_tag="text-classification",
        artefact=("PEFT adapter (sequence classification, regression)" if mode == "lora"
                  else "sentence encoder + MLP regression head" if mode == "mlp"
                  else "sentence encoder + linear regression head" + (" (ridge, closed form)" if mode == "ridge" else "")),
        settings=settings, usage_markdown=usage, extra_markdown=sections, evaluation_markdown=evaluation,
        limitations=limitations or ("Trained on LLM labels: it reproduces the oracle's judgement, including its "
                                    "mistakes and biases, and only as well as the test table shows."),
    )
    return render_model_card(info)
