"""Thyme end to end on a tiny slice of a book: corpus -> dataset -> ThymeLM and a transformer trained
through the shared loop -> a run killed after a checkpoint resumes at that step -> the eval table has
both models below the unigram baseline's perplexity; a finished run is reused, not retrained."""

import json

import pytest

torch = pytest.importorskip("torch")

from distillery_assets.thyme.corpus import iter_sources, read_corpus, write_corpus  # noqa: E402
from distillery_assets.thyme.dataset import build_dataset  # noqa: E402
from distillery_assets.thyme.evaluate import baseline_rows, evaluate, neural_scorer  # noqa: E402
from distillery_assets.thyme.experiments import Experiment, load_experiment  # noqa: E402
from distillery_assets.thyme.train import CHECKPOINT_DIR, load_model, train_model  # noqa: E402


def _tiny() -> Experiment:
    body = load_experiment("books-cpu").model_dump(exclude={"name"})
    body["corpus"]["sources"] = [{"kind": "local", "path": "data/inputs/thyme_books",
                                  "files": ["alice_wonderland.txt"], "max_chars_per_book": 40_000}]
    body["dataset"]["window"] = 32
    body["tokenizer"] = {"vocab_size": 300, "min_frequency": 2}
    body["models"] = {
        "thyme": {"architecture": "thyme", "variant": "books", "embed_dim": 32, "hidden": 64, "dropout": 0.0},
        "transformer": {"architecture": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 64},
    }
    body["training"].update(batch_size=16, epochs=3, learning_rate=0.01, checkpoint_every=10, log_every=10,
                            threads=2, warmup_steps=0)
    return Experiment.model_validate(body).model_copy(update={"name": "tiny"})


class Killed(Exception):
    pass


def test_train_resume_reuse_and_eval_table(tmp_path):
    exp = _tiny()
    write_corpus(iter_sources(exp.corpus), tmp_path / "corpus")
    ds = build_dataset((d.text for d in read_corpus(tmp_path / "corpus")), exp, tmp_path / "dataset")
    assert ds.vocab_size == 300 and len(ds.train) > 100

    def kill_at_15(p):
        if p.step == 15:
            raise Killed

    out = tmp_path / "thyme"
    with pytest.raises(Killed):
        train_model(exp, "thyme", ds, out, device="cpu", progress=kill_at_15)
    saved = json.loads((out / CHECKPOINT_DIR / "loop_state.json").read_text())
    assert saved["step"] == 10

    resumed = train_model(exp, "thyme", ds, out, device="cpu")
    assert not resumed.reused and resumed.info["resumed_from_step"] == 10
    assert resumed.info["steps"] > 30 and not (out / CHECKPOINT_DIR).exists()
    history = json.loads((out / "training_history.json").read_text())
    assert [s["step"] for s in history["steps"]] == list(range(1, resumed.info["steps"] + 1))

    again = train_model(exp, "thyme", ds, out, device="cpu")
    assert again.reused  # a finished run is reused, not retrained

    transformer = train_model(exp, "transformer", ds, tmp_path / "transformer", device="cpu")
    rows = {r.model: r for r in baseline_rows(ds.train, ds.val, ds.vocab_size, batch_size=16)}
    for key, folder in (("thyme", out), ("transformer", tmp_path / "transformer")):
        rows[key] = evaluate(key, neural_scorer(load_model(folder)), ds.val, batch_size=16)
    assert transformer.info["parameters"] > 0
    assert rows["thyme"].ppl < rows["unigram"].ppl, rows
    assert rows["transformer"].ppl < rows["unigram"].ppl, rows
    for r in rows.values():
        assert r.bpb > 0 and r.seed_ppl > 1 and r.scored_tokens == ds.val.scored_tokens
    print({k: (round(r.seed_ppl, 1), round(r.ppl, 1), round(r.bpb, 3)) for k, r in rows.items()})


def test_a_run_stopped_by_patience_is_reused_with_it_and_carried_on_without_it(tmp_path, monkeypatch):
    from distillery_assets.training import loop

    exp = _tiny()
    write_corpus(iter_sources(exp.corpus), tmp_path / "corpus")
    ds = build_dataset((d.text for d in read_corpus(tmp_path / "corpus")), exp, tmp_path / "dataset")
    losses = iter(range(1, 100))  # validation only ever gets worse: epoch 1 stays the best
    monkeypatch.setattr(loop, "evaluate_loss", lambda *a, **k: float(next(losses)))
    patient = exp.model_copy(update={"training": exp.training.model_copy(update={"epochs": 4, "patience": 1})})
    out = tmp_path / "thyme"

    stopped = train_model(patient, "thyme", ds, out, device="cpu")
    assert stopped.info["stopped_early"] == {"epoch": 2, "best_epoch": 1, "patience": 1}
    assert len(stopped.info["epochs"]) == 2 and (out / CHECKPOINT_DIR).exists()  # latest/ kept
    assert train_model(patient, "thyme", ds, out, device="cpu").reused  # same stopping rule: finished

    unlimited = exp.model_copy(update={"training": patient.training.model_copy(update={"patience": None})})
    carried = train_model(unlimited, "thyme", ds, out, device="cpu")
    assert not carried.reused and carried.info["resumed_from_step"] == stopped.info["steps"]
    assert len(carried.info["epochs"]) == 4 and carried.info["stopped_early"] is None
    assert not (out / CHECKPOINT_DIR).exists()
