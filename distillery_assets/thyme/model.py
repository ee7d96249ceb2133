"""ThymeLM: the seed's small recurrent language model with a 24x24 outer-product state.

Per token the model makes 24 "composites" ``c_t`` (from 12 "axioms") and folds them into a state

    S_t = d * S_{t-1} + m * c_t c_t^T,      S_0 = 0,   d = sigmoid(decay), m = sigmoid(mix)

(``decay`` and ``mix`` are two learned scalars, initialised 0.9 and 0.1). The flattened state (576 values,
2,304 bytes in fp32) goes through an output MLP to the next-token logits. The state is all the model
remembers, so generation needs constant memory however long the text.

Two configurations come from the seed:

* ``books``   (its ``train_books.py``): embedding 256 -> Linear(E,12)+LayerNorm+Tanh (axioms)
  -> Linear(12,24)+LayerNorm+Tanh (composites); output MLP 576 -> 512 -> GELU -> Dropout -> vocab.
* ``corpus``  (its ``train_corpus.py``, the "enhanced" recipe): token + learned position embedding 512,
  ``n_layers`` layers of Linear(in,24)+LayerNorm+GELU+Linear(24,12)+Tanh -> Linear(12,24)+LayerNorm+Tanh
  -> Dropout; output MLP 576 -> 1024 -> GELU -> Dropout -> vocab.

The seed's corpus model looped ``for layer in self.layers: composites = layer(x)``: every layer read the
embeddings and only the last one's output was used, so the other layers trained nothing. Here the layers
are chained (layer k+1 reads layer k's 24 composites) unless ``chain_layers=False``, which keeps the
seed's behaviour for reproducing its numbers and nothing else.

The recurrence is linear with a scalar decay, so during training the whole sequence is computed at once:
``vec(S_t) = m * sum_{s<=t} d^(t-s) vec(c_s c_s^T)``, one batched matmul of the lower-triangular matrix
``D[t, s] = d^(t-s)`` with the per-step outer products (``recurrence="parallel"``). ``recurrence="loop"``
is the seed's per-time-step Python loop, kept for the equality test and the benchmark. :meth:`step` is
the one-token form used for generation.

ThymeLM has no GGUF form: llama.cpp has no architecture with this state update.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

N_AXIOMS = 12
N_COMPOSITES = 24
N_STATE = N_COMPOSITES * N_COMPOSITES  # 576 values = 2,304 bytes in fp32


@dataclass(frozen=True)
class ThymeConfig:
    vocab_size: int = 10_000
    variant: Literal["books", "corpus"] = "books"
    embed_dim: int = 256
    hidden: int = 512  # width of the output MLP
    n_layers: int = 1  # corpus variant only
    max_positions: int | None = None  # learned position embeddings (corpus variant); None: none
    chain_layers: bool = True  # False: the seed's unchained layers (reproduction only)
    dropout: float = 0.1
    decay_init: float = 0.9
    mix_init: float = 0.1

    def __post_init__(self):
        if self.variant == "books" and (self.n_layers != 1 or self.max_positions is not None):
            raise ValueError("the books variant has one encoder and no position embeddings "
                             "(n_layers: 1, max_positions: null)")
        if self.n_layers < 1:
            raise ValueError("n_layers must be at least 1")

    @classmethod
    def books(cls, vocab_size: int = 10_000, **over) -> ThymeConfig:
        return cls(vocab_size=vocab_size, **over)

    @classmethod
    def corpus(cls, vocab_size: int = 32_000, **over) -> ThymeConfig:
        body = dict(variant="corpus", embed_dim=512, hidden=1024, n_layers=2, max_positions=256)
        body.update(over)
        return cls(vocab_size=vocab_size, **body)

    def to_dict(self) -> dict:
        return asdict(self)


class BooksEncoder(nn.Module):
    """Embedding -> 12 axioms -> 24 composites (the seed's books model)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.axioms = nn.Sequential(nn.Linear(embed_dim, N_AXIOMS), nn.LayerNorm(N_AXIOMS), nn.Tanh())
        self.composites = nn.Sequential(nn.Linear(N_AXIOMS, N_COMPOSITES), nn.LayerNorm(N_COMPOSITES), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.composites(self.axioms(x))


class ThymeLayer(nn.Module):
    """One layer of the corpus model: input -> 24 -> 12 axioms -> 24 composites."""

    def __init__(self, in_dim: int, dropout: float):
        super().__init__()
        self.axioms = nn.Sequential(nn.Linear(in_dim, N_COMPOSITES), nn.LayerNorm(N_COMPOSITES), nn.GELU(),
                                    nn.Linear(N_COMPOSITES, N_AXIOMS), nn.Tanh())
        self.composites = nn.Sequential(nn.Linear(N_AXIOMS, N_COMPOSITES), nn.LayerNorm(N_COMPOSITES), nn.Tanh())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.composites(self.axioms(x)))


class ThymeLM(nn.Module):
    def __init__(self, config: ThymeConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.positions = nn.Embedding(cfg.max_positions, cfg.embed_dim) if cfg.max_positions else None
        if cfg.variant == "books":
            self.layers = nn.ModuleList([BooksEncoder(cfg.embed_dim)])
        else:
            dims = [cfg.embed_dim] + [N_COMPOSITES if cfg.chain_layers else cfg.embed_dim] * (cfg.n_layers - 1)
            self.layers = nn.ModuleList([ThymeLayer(d, cfg.dropout) for d in dims])
        self.decay = nn.Parameter(torch.tensor(cfg.decay_init))
        self.mix = nn.Parameter(torch.tensor(cfg.mix_init))
        self.output = nn.Sequential(nn.Linear(N_STATE, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                    nn.Linear(cfg.hidden, cfg.vocab_size))

    # ------------------------------------------------------------------------------------ per-token part

    def composites(self, input_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``(B, T)`` token ids -> ``(B, T, 24)`` composites; ``start`` is the position of the first token."""
        x = self.embed(input_ids)
        if self.positions is not None:
            pos = torch.arange(start, start + input_ids.size(1), device=input_ids.device)
            x = x + self.positions(pos.clamp(max=self.positions.num_embeddings - 1))
        if self.config.chain_layers:
            for layer in self.layers:
                x = layer(x)
            return x
        out = x
        for layer in self.layers:  # the seed: every layer reads the embeddings, the last one wins
            out = layer(x)
        return out

    def rates(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(self.decay), torch.sigmoid(self.mix)

    # ----------------------------------------------------------------------------------------- the state

    def states_parallel(self, c: torch.Tensor) -> torch.Tensor:
        """All states at once: ``(B, T, 24)`` composites -> ``(B, T, 576)`` flattened ``S_1..S_T``.

        ``vec(S_t) = sum_s m d^(t-s) vec(c_s c_s^T)``: the per-token outer products laid out time-major as one
        ``(T, B*576)`` matrix, so the whole recurrence is one GEMM with the ``(T, T)`` weights, ``m`` folded in.
        The outer products are a batched matmul, not a broadcast multiply, so their backward is two small
        batched matmuls (``(G + G^T) c``) instead of broadcast products and reductions over ``B*T*576`` values;
        that backward, not the GEMM, was most of the recurrence's cost on a CPU."""
        d, m = self.rates()
        B, T, K = c.shape
        ct = c.transpose(0, 1).reshape(T * B, K)  # time-major: row t*B + b
        outer = torch.bmm(ct.unsqueeze(2), ct.unsqueeze(1)).view(T, B * K * K)
        states = torch.matmul(decay_weights(T, d, m).to(c.dtype), outer).view(T, B, K * K)
        return states.transpose(0, 1).contiguous()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                recurrence: Literal["parallel", "loop"] = "parallel") -> SimpleNamespace:
        """Next-token logits ``(B, T, vocab)`` at every position. Causal, so right padding (and the
        ``attention_mask`` the training loop passes) changes nothing before it."""
        c = self.composites(input_ids)
        if recurrence == "loop":
            return SimpleNamespace(logits=self._forward_loop(c))
        return SimpleNamespace(logits=self.output(self.states_parallel(c)))

    def _forward_loop(self, c: torch.Tensor) -> torch.Tensor:
        """The seed's form: a Python loop over time steps, output MLP applied inside it."""
        B = c.size(0)
        d, m = self.rates()
        state = c.new_zeros(B, N_COMPOSITES, N_COMPOSITES)
        logits = []
        for t in range(c.size(1)):
            ct = c[:, t]
            state = d * state + m * torch.bmm(ct.unsqueeze(2), ct.unsqueeze(1))
            logits.append(self.output(state.reshape(B, N_STATE)))
        return torch.stack(logits, dim=1)

    # ---------------------------------------------------------------------------------------- generation

    def initial_state(self, batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, N_COMPOSITES, N_COMPOSITES, device=device, dtype=torch.float32)

    def step(self, token: torch.Tensor, state: torch.Tensor, position: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``(B,)`` and the state ``(B, 24, 24)`` -> logits ``(B, vocab)`` and the new state."""
        c = self.composites(token.view(-1, 1), start=position)[:, 0]
        d, m = self.rates()
        state = d * state + m * (c.unsqueeze(2) * c.unsqueeze(1))
        return self.output(state.reshape(state.size(0), N_STATE)), state

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = 50, top_p: float | None = 0.9, eos_id: int | None = None,
                 generator: torch.Generator | None = None, on_state=None) -> list[int]:
        """Sample a continuation with the step form; memory stays one 24x24 state however long it runs.

        ``on_state(step, state)`` is called after every token (the memory test watches the state)."""
        was_training = self.training
        self.eval()
        device = self.decay.device
        state = self.initial_state(1, device)
        logits = None
        for pos, tok in enumerate(prompt_ids):
            logits, state = self.step(torch.tensor([tok], device=device), state, pos)
        out: list[int] = []
        pos = len(prompt_ids)
        for i in range(max_new_tokens):
            nxt = sample_next(logits[0], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            out.append(nxt)
            if eos_id is not None and nxt == eos_id:
                break
            logits, state = self.step(torch.tensor([nxt], device=device), state, pos)
            pos += 1
            if on_state is not None:
                on_state(i, state)
        self.train(was_training)
        return out


def decay_weights(T: int, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``W[t, s] = m * d^(t-s)`` for ``s <= t`` and 0 above the diagonal: ``exp((t-s) log d + log m)``, masked
    before the exp (no inf * 0)."""
    t = torch.arange(T, device=d.device)
    lag = (t[:, None] - t[None, :]).to(d.dtype)
    causal = lag >= 0
    return torch.exp(torch.where(causal, lag, torch.zeros_like(lag)) * torch.log(d) + torch.log(m)) * causal


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = 50,
                top_p: float | None = 0.9, generator: torch.Generator | None = None) -> int:
    """Top-k then nucleus (top-p) sampling from one row of logits, as the seed's generator did."""
    logits = logits.float() / max(temperature, 1e-6)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cum > top_p
        drop[1:] = drop[:-1].clone()  # keep the token that crosses the threshold
        drop[0] = False
        logits[order[drop]] = -math.inf
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))


def state_bytes(state: torch.Tensor) -> int:
    """Bytes one sequence's state occupies (2,304 for a 24x24 fp32 state)."""
    return state[0].numel() * state.element_size()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
