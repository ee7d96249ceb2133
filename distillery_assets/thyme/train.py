"""Train an experiment's models (ThymeLM or the Llama-style transformer) through the shared loop.

``training.loop.train_loop`` does the work: AdamW, the schedule, gradient clipping, per-epoch validation,
``training_history.json``, checkpoints with the step counter and resume. This module builds the model
from the experiment, turns its training profile into a ``LoopConfig``, feeds the loop the dataset's
windows (read from the memory-mapped token array as the loop asks for them), logs progress every
``log_every`` steps with an ETA, and writes the trained weights atomically. A finished run with the same
fingerprint is reused, not retrained.

A run's folder: ``latest/`` (the loop's checkpoint every ``checkpoint_every`` steps and at each epoch's
end, removed when the run finishes), ``best/`` (the parameters of the epoch with the lowest validation
loss), ``model.pt`` (the final weights), ``training_history.json`` (every step; per epoch train/val loss
and perplexity, learning rate, tokens/s and the seed's validation metric ``seed_ppl``) and ``model.json``
(written last: it marks the run finished).

Differences from the seed's loop, on purpose: the cosine schedule steps per optimizer step (the seed's
``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch), and the batch order comes from the loop's
seeded shuffle rather than a torch DataLoader. The loss is the seed's: the batch's mean cross-entropy
over non-PAD targets (with ``grad_accum`` > 1, the mean over the whole accumulation group).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.io.hashing import json_fingerprint
from distillery_assets.thyme.dataset import Dataset
from distillery_assets.thyme.experiments import Experiment, LlamaArchitecture, ThymeArchitecture, warmup_ratio
from distillery_assets.thyme.tokenizer import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
MODEL_FILE = "model.json"
CHECKPOINT_DIR = "latest"
BEST_DIR = "best"


def build_model(arch: ThymeArchitecture | LlamaArchitecture, vocab_size: int):
    """A freshly initialised model (seed torch first for a reproducible init)."""
    if isinstance(arch, ThymeArchitecture):
        from distillery_assets.thyme.model import ThymeLM

        return ThymeLM(arch.thyme_config(vocab_size))
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads or arch.num_attention_heads,
        max_position_embeddings=arch.max_position_embeddings, tie_word_embeddings=arch.tie_word_embeddings,
        rope_theta=arch.rope_theta, attention_dropout=arch.dropout,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
    )
    return LlamaForCausalLM(config)


def loop_config(exp: Experiment, key: str, n_train_windows: int):
    """The experiment's training profile (with the model's overrides) as the shared loop's ``LoopConfig``."""
    from distillery_assets.training.config import LoopConfig
    from distillery_assets.training.loop import plan_steps

    t = exp.training_for(key)
    cfg = LoopConfig(
        role="thyme", profile=f"{exp.name}/{key}", learning_rate=t.learning_rate, lr_scheduler=t.lr_scheduler,
        epochs=t.epochs, batch_size=t.batch_size, grad_accum=t.grad_accum, max_seq=exp.dataset.window + 1,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, max_steps=t.max_steps, seed=t.seed,
        threads=t.threads, checkpoint_every=t.checkpoint_every, patience=t.patience,
    )
    if t.warmup_steps:
        cfg = cfg.model_copy(update={"warmup_ratio": warmup_ratio(t.warmup_steps, plan_steps(n_train_windows, cfg))})
    return cfg


def run_fingerprint(exp: Experiment, key: str, dataset: Dataset, cfg) -> str:
    body = {"loop": cfg.fingerprint(), "model": exp.models[key].model_dump(), "dataset": dataset.info["fingerprint"],
            "vocab": dataset.vocab_size}
    return json_fingerprint(body)


class ProgressLog:
    """The loop's per-step progress, logged every ``every`` steps with the time left."""

    def __init__(self, every: int, logger: logging.Logger = log):
        self.every, self.logger, self.started = every, logger, time.perf_counter()
        self.first_step: int | None = None

    def __call__(self, p) -> None:
        if self.first_step is None:
            self.first_step, self.started = p.step - 1, time.perf_counter()
        if p.step % self.every and p.step != p.total_steps:
            return
        done = p.step - self.first_step
        eta = (time.perf_counter() - self.started) / max(done, 1) * (p.total_steps - p.step)
        self.logger.info("step %d/%d epoch %d loss %.4f %.0f tok/s lr %.2e eta %s", p.step, p.total_steps, p.epoch,
                         p.loss, p.tokens_per_s, p.lr, time.strftime("%H:%M:%S", time.gmtime(eta)))


@dataclass
class TrainedModel:
    key: str
    folder: Path
    model: Any
    info: dict[str, Any]
    reused: bool


def checkpoint_step(folder: Path, fingerprint: str) -> int | None:
    """The step of ``folder/latest`` if it belongs to this run (same fingerprint), else None."""
    from distillery_assets.training.loop import CHECKPOINT_STATE

    state = _read_json(Path(folder) / CHECKPOINT_DIR / CHECKPOINT_STATE)
    if not state or state.get("fingerprint") != fingerprint:
        return None
    return int(state.get("step", 0))


def seed_metric_hook(dataset: Dataset, batch_size: int, device: str):
    """``on_epoch_end`` for the shared loop: the seed's validation metric of the epoch's model."""
    from distillery_assets.thyme.evaluate import neural_scorer, seed_metric

    def hook(model, epoch: int) -> dict[str, float]:
        return {"seed_ppl": seed_metric(neural_scorer(model, device), dataset.val, batch_size=batch_size)}

    return hook


def train_model(exp: Experiment, key: str, dataset: Dataset, folder: Path, *, device: str | None = None,
                progress=None) -> TrainedModel:
    """Train ``exp.models[key]`` on ``dataset`` into ``folder`` (``model.pt``, ``model.json``,
    ``training_history.json``, ``best/``); resume from ``folder/latest`` when it matches; reuse a finished run."""
    import shutil

    import torch

    from distillery_assets.device import pick_device
    from distillery_assets.training.loop import (BEST_STATE, HISTORY_FILE, Checkpoints, amp_dtype, seed_torch,
                                                 train_loop)

    folder = Path(folder)
    arch = exp.models[key]
    cfg = loop_config(exp, key, len(dataset.train))
    device = pick_device(device, cuda_required=cfg.cuda_required)
    if exp.training_for(key).amp:
        cfg = cfg.model_copy(update={"autocast": amp_dtype(device)})
        if cfg.autocast is None:
            log.warning("%s/%s: amp is set but %s has no native bf16; training in fp32", exp.name, key, device)
    fingerprint = run_fingerprint(exp, key, dataset, cfg)
    finished = _read_json(folder / MODEL_FILE)
    if finished and finished.get("fingerprint") == fingerprint and (folder / WEIGHTS_FILE).exists():
        stopped = finished.get("stopped_early")
        if not stopped or (cfg.patience is not None and cfg.patience <= stopped["patience"]):
            log.info("%s/%s: a finished run with the same settings is in %s; reused", exp.name, key, folder)
            return TrainedModel(key, folder, load_model(folder), finished, reused=True)
        log.info("%s/%s: the run in %s stopped after epoch %d (patience %d); patience is now %s, so it carries on "
                 "from its last checkpoint", exp.name, key, folder, stopped["epoch"], stopped["patience"],
                 cfg.patience or "off")
    seed_torch(cfg.seed, cfg.threads)
    model = build_model(arch, dataset.vocab_size).to(device)
    checkpoints = Checkpoints(folder / CHECKPOINT_DIR, fingerprint)
    resume_at = checkpoint_step(folder, fingerprint)
    if resume_at is None:
        shutil.rmtree(folder / BEST_DIR, ignore_errors=True)  # a best of other settings is not this run's
    else:
        log.info("%s/%s: resuming from step %d (checkpoint %s)", exp.name, key, resume_at, folder / CHECKPOINT_DIR)
    t = exp.training_for(key)
    result = train_loop(model, dataset.train.examples(), dataset.val.examples(), cfg, device=device, pad_id=PAD_ID,
                        checkpoints=checkpoints, progress=progress or ProgressLog(t.log_every),
                        on_epoch_end=seed_metric_hook(dataset, t.eval_batch_size or t.batch_size, device),
                        best_dir=folder / BEST_DIR)
    best = _read_json(folder / BEST_DIR / BEST_STATE) or {}
    info = {
        "experiment": exp.name, "key": key, "fingerprint": fingerprint, "architecture": arch.architecture,
        "config": arch.model_dump(exclude={"training"}), "vocab_size": dataset.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()), "steps": result.steps,
        "tokens_seen": result.tokens_seen, "train_seconds": result.train_seconds,
        "tokens_per_s": result.tokens_per_s, "resumed_from_step": result.resumed_from_step, "device": device,
        "autocast": cfg.autocast,
        "best_epoch": best.get("epoch"), "best_val_loss": best.get("val_loss"), "best_seed_ppl": best.get("seed_ppl"),
        "epochs": result.history.epochs,
        "stopped_early": result.stopped_early,
    }
    folder.mkdir(parents=True, exist_ok=True)
    result.history.write(folder / HISTORY_FILE)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    atomic_write_text(folder / MODEL_FILE, json.dumps(info, indent=1))  # written last: marks the run finished
    if result.stopped_early is None:
        checkpoints.clear()  # a run stopped by patience keeps latest/: run without it, it carries on from there
    return TrainedModel(key, folder, model, info, reused=False)


def load_model(folder: Path, weights: str = "final"):
    """The trained model of ``folder`` (weights and ``model.json``), on CPU, in eval mode. ``weights``:
    ``final`` (``model.pt``) or ``best`` (the epoch with the lowest validation loss, ``best/``)."""
    import torch

    from distillery_assets.training.loop import load_best

    folder = Path(folder)
    info = _read_json(folder / MODEL_FILE)
    if not info:
        raise FileNotFoundError(f"{folder}: no {MODEL_FILE}; the model was not trained (or not to the end)")
    if weights not in ("final", "best"):
        raise ValueError(f"weights must be 'final' or 'best', not {weights!r}")
    arch_cls = ThymeArchitecture if info["architecture"] == "thyme" else LlamaArchitecture
    model = build_model(arch_cls.model_validate(info["config"]), info["vocab_size"])
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    if weights == "best":
        if not (folder / BEST_DIR).is_dir():
            raise FileNotFoundError(f"{folder}: no {BEST_DIR}/ checkpoint")
        load_best(folder / BEST_DIR, model)
    return model.eval()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
