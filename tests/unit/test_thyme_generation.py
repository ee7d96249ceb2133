"""The step form's state is one 24x24 fp32 tensor (2,304 bytes) after every one of many steps: same shape,
same dtype, its own storage of 2,304 bytes (not a view into something that grows), and finite."""

import pytest

torch = pytest.importorskip("torch")

from distillery_assets.thyme.model import ThymeConfig, ThymeLM, state_bytes  # noqa: E402


@pytest.fixture
def one_thread():
    """One-token steps are tiny ops: on 2 shared cores a second thread only adds synchronisation (20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cfg", [ThymeConfig.books(vocab_size=40, embed_dim=8, hidden=16, dropout=0.0),
                                 ThymeConfig.corpus(vocab_size=40, embed_dim=8, hidden=16, n_layers=2,
                                                    max_positions=16, dropout=0.0)], ids=["books", "corpus"])
def test_step_state_stays_2304_bytes_over_many_steps(cfg, one_thread):
    torch.manual_seed(0)
    model = ThymeLM(cfg).eval()
    state = model.initial_state(1)
    tokens = torch.randint(0, cfg.vocab_size, (3000,), generator=torch.Generator().manual_seed(0))
    seen = set()
    with torch.no_grad():
        for pos, tok in enumerate(tokens):
            logits, state = model.step(tok.view(1), state, pos)  # positions past max_positions clamp
            if pos % 97 == 0 or pos == len(tokens) - 1:
                seen.add((tuple(state.shape), state.dtype, state_bytes(state), state.untyped_storage().nbytes()))
                assert torch.isfinite(state).all() and logits.shape == (1, cfg.vocab_size)
    assert seen == {((1, 24, 24), torch.float32, 2304, 2304)}
