"""ThymeLM: the parallel recurrence equals the seed's per-step loop and the one-token step form; the
generation state stays 24x24 fp32 (2,304 bytes) however many tokens are generated."""

import pytest

torch = pytest.importorskip("torch")

from distillery_assets.thyme.model import N_STATE, ThymeConfig, ThymeLM, parameter_count, state_bytes  # noqa: E402

SMALL = [
    ThymeConfig.books(vocab_size=50, embed_dim=16, hidden=32, dropout=0.0),
    ThymeConfig.corpus(vocab_size=50, embed_dim=16, hidden=32, n_layers=3, max_positions=8, dropout=0.0),
    ThymeConfig.corpus(vocab_size=50, embed_dim=16, hidden=32, n_layers=2, max_positions=64,
                       chain_layers=False, dropout=0.0),
]


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    model = ThymeLM(cfg).eval()
    with torch.no_grad():  # move the rates away from their init so the test is not at one special point
        model.decay.fill_(1.7)
        model.mix.fill_(-0.4)
    return model


@pytest.mark.parametrize("cfg", SMALL, ids=["books", "corpus-chained", "corpus-seed-unchained"])
def test_parallel_equals_loop_and_step_logits(cfg):
    model = _model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (3, 40))
    with torch.no_grad():
        parallel = model(ids).logits
        loop = model(ids, recurrence="loop").logits
        state = model.initial_state(3)
        steps = []
        for t in range(ids.size(1)):
            logits, state = model.step(ids[:, t], state, t)
            steps.append(logits)
        stepped = torch.stack(steps, 1)
    assert parallel.shape == (3, 40, cfg.vocab_size)
    assert (parallel - loop).abs().max().item() < 1e-5
    assert (parallel - stepped).abs().max().item() < 1e-5


def test_gradients_of_both_forms_agree():
    cfg = SMALL[0]
    grads = []
    for mode in ("parallel", "loop"):
        model = _model(cfg)
        ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
        model(ids, recurrence=mode).logits.logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_chaining_is_real_and_the_seed_flag_keeps_the_old_wiring():
    chained = ThymeLM(ThymeConfig.corpus(vocab_size=50, embed_dim=16, hidden=32, n_layers=2, max_positions=8))
    seed = ThymeLM(ThymeConfig.corpus(vocab_size=50, embed_dim=16, hidden=32, n_layers=2, max_positions=8,
                                      chain_layers=False))
    assert chained.layers[1].axioms[0].in_features == 24  # layer 2 reads layer 1's composites
    assert seed.layers[1].axioms[0].in_features == 16  # the seed: every layer reads the embeddings
    seed(torch.randint(0, 50, (2, 6))).logits.sum().backward()
    assert seed.layers[0].axioms[0].weight.grad is None  # its first layer never trains: the bug the flag keeps


def test_books_config_has_the_seeds_size():
    model = ThymeLM(ThymeConfig.books())
    assert 7.9e6 < parameter_count(model) < 8.1e6  # "~8.0M"
    with pytest.raises(ValueError, match="books variant"):
        ThymeConfig(variant="books", n_layers=2)


def test_generation_state_is_flat_over_many_tokens():
    model = _model(SMALL[0])
    sizes, shapes = set(), set()

    def watch(step, state):
        sizes.add(state_bytes(state))
        shapes.add(tuple(state.shape))

    out = model.generate([2, 5, 7], 800, eos_id=None, generator=torch.Generator().manual_seed(0), on_state=watch)
    assert len(out) == 800
    assert sizes == {2304} and shapes == {(1, 24, 24)} and N_STATE * 4 == 2304
