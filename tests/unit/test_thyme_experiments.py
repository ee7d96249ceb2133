"""Thyme experiment files: the shipped ones load, each is a partition, bad files name file and field."""

import pytest

from distillery_assets.thyme.experiments import ExperimentError, experiment_names, load_experiment, warmup_ratio

SHIPPED = {"books-seed", "books-transformer", "books-cpu", "corpus-seed", "distillery"}


def test_shipped_experiments_are_the_partitions_and_books_seed_is_the_seeds_recipe():
    assert SHIPPED <= set(experiment_names())
    seed = load_experiment("books-seed")
    assert seed.name == "books-seed"
    assert [s.kind for s in seed.corpus.sources] == ["local"]
    assert seed.tokenizer.vocab_size == 10_000 and seed.dataset.window == 128 and seed.dataset.split_seed == 42
    t = seed.training
    assert (t.batch_size, t.epochs, t.learning_rate, t.weight_decay, t.lr_scheduler, t.max_grad_norm) == \
        (32, 20, 2e-3, 0.01, "cosine", 1.0)
    arch = seed.models["thyme"]
    assert (arch.architecture, arch.variant, arch.embed_dim, arch.hidden) == ("thyme", "books", 256, 512)
    # the transformer shares data, split and tokenizer: the same dataset fingerprint
    assert load_experiment("books-transformer").fingerprint("dataset") == seed.fingerprint("dataset")
    corpus = load_experiment("corpus-seed")
    c = corpus.models["thyme"]
    assert (corpus.tokenizer.vocab_size, c.embed_dim, c.n_layers, c.max_positions, c.chain_layers) == \
        (32_000, 512, 2, 256, True)
    assert (corpus.training.grad_accum, corpus.training.warmup_steps, corpus.training.amp) == (4, 1000, True)


def test_transformer_is_no_larger_than_thymelm():
    torch = pytest.importorskip("torch")  # noqa: F841
    from distillery_assets.thyme.train import build_model

    thyme = build_model(load_experiment("books-seed").models["thyme"], 10_000)
    llama = build_model(load_experiment("books-transformer").models["transformer"], 10_000)
    n_thyme, n_llama = (sum(p.numel() for p in m.parameters()) for m in (thyme, llama))
    assert 0.9 * n_thyme < n_llama <= n_thyme


def _write(tmp_path, text, name="bad"):
    (tmp_path / f"{name}.yaml").write_text(load_text() + text, encoding="utf-8")
    return tmp_path / f"{name}.yaml"


def load_text():
    from distillery_assets.thyme.experiments import experiment_path

    return experiment_path("books-cpu").read_text(encoding="utf-8")


def test_unknown_field_names_file_and_field(tmp_path):
    path = _write(tmp_path, "surprise: 1\n")
    with pytest.raises(ExperimentError, match=r"bad\.yaml: surprise: Extra inputs are not permitted"):
        load_experiment(path)


def test_unknown_architecture_names_the_model_field(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(load_text().replace("architecture: llama", "architecture: mamba"), encoding="utf-8")
    with pytest.raises(ExperimentError, match=r"arch\.yaml: models\.transformer"):
        load_experiment(path)


def test_missing_experiment_lists_the_known_ones(tmp_path):
    (tmp_path / "one.yaml").write_text(load_text(), encoding="utf-8")
    with pytest.raises(ExperimentError, match=r"no such experiment file \(experiments: one\)"):
        load_experiment("two", folder=tmp_path)
    assert experiment_names(tmp_path) == ["one"]


def test_warmup_steps_become_the_loops_ratio():
    import math

    for steps, total in [(1000, 6100), (7, 9), (200, 6100)]:
        assert math.ceil(warmup_ratio(steps, total) * total) == steps
    assert warmup_ratio(0, 100) == 0.0
