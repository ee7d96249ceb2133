"""Thyme's pieces behind the assets, on a tiny slice: the tokenizer built on its own and reused by the
dataset, training through the compute resource's step (best/ by validation loss, the seed's metric per
epoch, a finished run reused), the evaluation (baselines, out-of-domain bits per byte, samples for the
seed's five prompts, reuse by fingerprint) and the model card."""

import json

import pytest

torch = pytest.importorskip("torch")

from distillery_assets.paths import inputs_dir  # noqa: E402
from distillery_assets.thyme.corpus import iter_sources, read_corpus, write_corpus  # noqa: E402
from distillery_assets.thyme.dataset import (  # noqa: E402
    TOKENIZER_INFO, build_dataset, build_tokenizer, chunk_text, split_from_chunks,
)
from distillery_assets.thyme.experiments import Experiment, load_experiment  # noqa: E402
from distillery_assets.thyme.report import (  # noqa: E402
    NO_GGUF_NOTE, SEED_PROMPTS, EvalError, eval_table_md, evaluate_experiment, model_card_markdown,
)
from distillery_assets.thyme.steps import ThymeTrainResult, TrainThymeSpec  # noqa: E402
from distillery_assets.thyme.tokenizer import TOKENIZER_FILE, load_tokenizer  # noqa: E402
from distillery_assets.thyme.train import BEST_DIR, CHECKPOINT_DIR, load_model  # noqa: E402
from resources.modal_app import parse_spec  # noqa: E402
from resources.compute import ComputeResource  # noqa: E402

OOD = inputs_dir() / "thyme_ood" / "pg2434.txt"


def _tiny() -> Experiment:
    body = load_experiment("books-cpu").model_dump(exclude={"name"})
    body["corpus"]["sources"] = [{"kind": "local", "path": "data/inputs/thyme_books",
                                  "files": ["alice_wonderland.txt"], "max_chars_per_book": 16_000}]
    body["dataset"]["window"] = 32
    body["tokenizer"] = {"vocab_size": 300, "min_frequency": 2}
    body["models"] = {
        "thyme": {"architecture": "thyme", "variant": "books", "embed_dim": 32, "hidden": 64, "dropout": 0.0},
        "transformer": {"architecture": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 64},
    }
    body["training"].update(batch_size=16, epochs=2, learning_rate=0.01, checkpoint_every=10, log_every=10,
                            threads=2, warmup_steps=0)
    return Experiment.model_validate(body).model_copy(update={"name": "tiny"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Corpus, tokenizer, dataset and both models trained through the compute resource's local backend."""
    root = tmp_path_factory.mktemp("thyme")
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILLERY_DATA_DIR", str(root))
    exp = _tiny()
    write_corpus(iter_sources(exp.corpus), root / "corpus")
    texts = [d.text for d in read_corpus(root / "corpus")]
    info = build_tokenizer(texts, exp, root / "tokenizer")
    ds = build_dataset(texts, exp, root / "dataset", tokenizer=root / "tokenizer" / TOKENIZER_FILE)
    compute = ComputeResource(backend="local")
    results = {}
    for key in exp.models:
        spec = TrainThymeSpec(experiment=exp, model_key=key, dataset_dir="dataset", out_dir=f"models/{key}")
        assert parse_spec(spec.model_dump(mode="json")) == spec  # travels to Modal as JSON
        results[key] = compute.run_step(spec)
    yield root, exp, info, ds, results, compute
    mp.undo()


def test_the_dataset_uses_the_tokenizer_asset_and_the_tokenizer_saw_only_training_chunks(built):
    root, exp, info, ds, _, _ = built
    assert (root / "tokenizer" / TOKENIZER_INFO).exists()
    assert info["trained_on"] == "train" and info["training_chunks"] == info["train_chunks"] == ds.info["train"]["chunks"]
    assert info["val_chunks"] == ds.info["val"]["chunks"]
    assert load_tokenizer(ds.tokenizer_path).get_vocab() == load_tokenizer(root / "tokenizer").get_vocab()


def test_training_through_the_step_keeps_best_records_the_seed_metric_per_epoch_and_reuses(built):
    root, exp, _, ds, results, compute = built
    for key, result in results.items():
        assert isinstance(result, ThymeTrainResult) and not result.reused
        folder = root / "models" / key
        assert (folder / BEST_DIR).is_dir() and not (folder / CHECKPOINT_DIR).exists()
        history = json.loads((folder / "training_history.json").read_text())
        assert len(history["epochs"]) == 2
        for e in history["epochs"]:
            assert {"train_loss", "val_loss", "train_ppl", "val_ppl", "lr", "tokens_per_s", "seed_ppl"} <= set(e)
            assert e["seed_ppl"] > 1
        best = min(history["epochs"], key=lambda e: e["val_loss"])
        assert result.best_epoch == best["epoch"] and result.best_seed_ppl == best["seed_ppl"]
        assert result.epochs == history["epochs"]
        load_model(folder, weights="best")  # the best weights load into the architecture
    again = compute.run_step(TrainThymeSpec(experiment=exp, model_key="thyme", dataset_dir="dataset",
                                            out_dir="models/thyme"))
    assert again.reused and again.fingerprint == results["thyme"].fingerprint


def test_an_unknown_model_key_is_an_error_naming_the_models(built):
    _, exp, _, _, _, compute = built
    with pytest.raises(ValueError, match="no model 'gpt'.*thyme, transformer"):
        compute.run_step(TrainThymeSpec(experiment=exp, model_key="gpt", dataset_dir="dataset", out_dir="models/gpt"))


def test_out_of_domain_split_is_windowed_like_the_dataset(built):
    _, exp, _, ds, _, _ = built
    chunks = chunk_text(OOD.read_text(encoding="utf-8")[:5000], exp.dataset.chunk_chars)
    split = split_from_chunks("ood", ds.tokenizer(), chunks, exp.dataset)
    assert split.chunks == len(chunks) and split.text_bytes == sum(len(c.encode()) for c in chunks)
    assert split.scored_tokens == len(split.tokens) - len(chunks)  # every token but each chunk's <BOS>
    assert (split.windows[:, 1] - split.windows[:, 0]).max() <= exp.dataset.window + 1


def test_evaluation_table_samples_reuse_and_card(built):
    root, exp, info, ds, _, _ = built
    models = {k: root / "models" / k for k in exp.models}
    report = evaluate_experiment(exp, ds, models, OOD, root / "eval", ood_max_chars=8000, max_new_tokens=12)
    rows = {r["model"]: r for r in report.rows}
    assert set(rows) == {"unigram", "3-gram", "thyme", "transformer"} and not report.reused
    for r in rows.values():
        assert r["bpb"] > 0 and r["ood_bpb"] > 0 and r["scored_tokens"] == ds.val.scored_tokens
    assert rows["thyme"]["ppl"] < rows["unigram"]["ppl"], rows
    samples = json.loads((root / "eval" / "samples.json").read_text())
    assert [s["prompt"] for s in samples["thyme"]] == list(SEED_PROMPTS) == [s["prompt"] for s in samples["transformer"]]
    assert all(s["continuation"] for s in samples["thyme"])
    assert (root / "eval" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert report.data["seed_ppl_per_epoch"]["thyme"] == [
        e["seed_ppl"] for e in json.loads((models["thyme"] / "training_history.json").read_text())["epochs"]]
    again = evaluate_experiment(exp, ds, models, OOD, root / "eval", ood_max_chars=8000, max_new_tokens=12)
    assert again.reused and again.rows == report.rows
    table = eval_table_md(report.rows)
    assert "unigram" in table and "OOD bits/byte" in table

    models_info = {k: json.loads((f / "model.json").read_text()) for k, f in models.items()}
    card = model_card_markdown(exp, report.data, models_info, {"documents": 1, "characters": 30000, "dropped": 0},
                               info, repo_id="someone/distillery-thyme-tiny")
    assert NO_GGUF_NOTE in card and "Perplexity against the baselines" in card and "3-gram" in card
    assert "library_name: pytorch" in card and "- lora" not in card and "Use the adapter" not in card
    assert "Chained layers" not in card  # only a multi-layer ThymeLM needs the note
    assert (f"paragraphs joined by one space while under {exp.dataset.chunk_chars} characters; "
            f"{info['chunks']:,} chunks split {info['train_chunks']:,} / {info['val_chunks']:,}") in card


def test_evaluation_of_an_untrained_model_names_it(built, tmp_path):
    _, exp, _, ds, _, _ = built
    with pytest.raises(EvalError, match="models not trained yet: thyme"):
        evaluate_experiment(exp, ds, {"thyme": tmp_path / "nothing"}, OOD, tmp_path / "eval")
