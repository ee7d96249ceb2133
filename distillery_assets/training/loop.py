"""What every training run shares, fine-tune or from scratch: seeding, batching, token-weighted loss, optimizer
and schedule (a filter's scorer takes these three too), the optimizer-step loop with gradient accumulation,
per-epoch validation, a history file, checkpoints with the step counter, resume, and progress logging.

The loop trains whatever parameters of ``model`` require gradients (a LoRA's adapters, or every weight of
a model trained from scratch) on :class:`~distillery_assets.training.chat_data.Example` token ids with
labels (``-100`` where no loss is taken). ``model(input_ids=..., attention_mask=...)`` must return an
object with ``.logits`` (any Hugging Face causal LM does). Settings come from a ``LoopConfig``; nothing
here knows about LoRA.

Checkpoints hold only the trainable parameters, the optimizer, the scheduler, torch's RNG state and the
loop position; the newest one (``latest``) replaces the previous one. With ``best_dir`` the trainable
parameters of the epoch with the lowest validation loss so far are kept there too (``best``). A run
resumes only from a checkpoint with the same fingerprint (same settings and data), and continues the step
counter, the history and the epoch it stopped in, so a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.training.chat_data import IGNORE, Example, collate
from distillery_assets.training.config import LoopConfig

log = logging.getLogger(__name__)

HISTORY_FILE = "training_history.json"
CHECKPOINT_STATE = "loop_state.json"
CHECKPOINT_TENSORS = "checkpoint.pt"


# ------------------------------------------------------------------------------------------- allocator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_MALLOC_STEADY = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse the memory of freed tensors instead of returning it to the kernel.

    Every CPU training step allocates activations, logits and gradients of tens to hundreds of MB. With glibc's
    default thresholds each comes from a fresh ``mmap`` that the kernel zero-fills page by page, every step.
    Raising the mmap threshold (1 GiB) and the trim threshold (2 GiB) serves them from the heap, reused.
    Measured by ``benchmarks/thyme_training.py`` on 2 cores: ThymeLM's step 1.11 s -> 0.78 s, books-transformer's
    2.68 s -> 1.35 s; the same numerics. The process keeps its peak memory until it exits (a training step's
    process does). Once per process; True when glibc accepted both settings, False elsewhere (not glibc) or with
    ``DISTILLERY_SYSTEM_MALLOC=1`` in the environment (glibc's defaults, e.g. to measure the difference)."""
    global _MALLOC_STEADY
    if _MALLOC_STEADY:
        return True
    import ctypes
    import ctypes.util
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("DISTILLERY_SYSTEM_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to speak of)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _MALLOC_STEADY = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _MALLOC_STEADY


# ---------------------------------------------------------------------------------------------- progress

@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    tokens_per_s: float
    lr: float

    @property
    def ppl(self) -> float:
        return _ppl(self.loss)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: a diverged loss stays a finite, plottable number


ProgressFn = Callable[[Progress], None]
EpochEndFn = Callable[[Any, int], dict[str, Any]]
"""``on_epoch_end(model, epoch) -> dict``: extra numbers merged into the epoch's history record (the model is
in eval mode during the call, under ``torch.no_grad``)."""


def log_progress(p: Progress) -> None:
    log.info("step %d/%d epoch %d loss %.4f %.0f tok/s lr %.2e", p.step, p.total_steps, p.epoch, p.loss,
             p.tokens_per_s, p.lr)


# ----------------------------------------------------------------------------------------- loop utilities

def seed_torch(seed: int, threads: int | None = None) -> None:
    """Seed torch and set its CPU threads (None: the thread policy's, ``distillery_assets.threads``: the
    step's share of the cores, so a fine-tune beside an LLM step does not oversubscribe them); every training
    run starts here."""
    import torch

    from distillery_assets.threads import apply_torch_threads

    apply_torch_threads(threads)
    torch.manual_seed(seed)


def batches(examples: list[Example], size: int, rng: random.Random | None) -> list[list[Example]]:
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    return [[examples[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def amp_dtype(device: str) -> str | None:
    """The mixed-precision dtype this device runs natively (``LoopConfig.autocast``), or None for fp32:
    bf16 on CUDA devices that have it in hardware (Ampere and later), else fp16 with a gradient scaler (T4,
    V100: ``torch.cuda.is_bf16_supported()`` counts emulated bf16 by default, which would pick a slow bf16 there
    and never reach the fp16 branch); bf16 on CPUs with AVX-512 BF16 or AMX (elsewhere torch emulates bf16
    matmuls, slower than fp32)."""
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if device == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        try:
            flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            flags = ""
        return "bf16" if native and ("avx512_bf16" in flags or "amx_bf16" in flags) else None
    return None


def _autocast(device_type: str, autocast: str | None):
    import contextlib

    import torch

    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, AUTOCAST_DTYPES[autocast]))


HEAD_ON_LABELS_ONLY = ("LlamaForCausalLM",)
"""Architectures whose logits are exactly ``lm_head(decoder(...).last_hidden_state)`` (no scaling, no soft cap),
so :func:`token_nll` may run the output head on the label positions only. SmolLM2, Llama 3.1 and the thyme
transformer are all ``LlamaForCausalLM``; anything else takes the whole model's logits."""


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output head) of a :data:`HEAD_ON_LABELS_ONLY` model, through a PEFT wrapper (LoRA layers sit in
    the decoder's modules, so the decoder alone runs them), else None."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    if type(base).__name__ not in HEAD_ON_LABELS_ONLY:
        return None
    return base.get_decoder(), base.get_output_embeddings()


def token_nll(model: Any, batch: dict[str, Any], autocast: str | None = None) -> tuple[Any, int]:
    """Summed next-token NLL over label tokens, and how many there were. With ``autocast`` (``bf16`` or
    ``fp16``) the forward pass runs under ``torch.autocast``; the loss is taken in fp32 either way.

    Only the positions that predict a label need logits. For a :data:`HEAD_ON_LABELS_ONLY` model whose batch
    has unlabelled positions (a chat example's prompt: about two thirds of the poet's tokens), the output head
    runs on the label positions alone: the same loss and gradients (up to float rounding,
    ``tests/unit/test_training_loop.py``) for about 16% less work per step on SmolLM2-135M, whose 49,152-word
    head is a fifth of the model (measured: 8.9 s -> 7.5 s for a LoRA forward+backward of 4 x 240 tokens with
    a third of them labels, one thread). Any other model, or a batch labelled everywhere, takes all logits."""
    import torch.nn.functional as F

    shift_labels = batch["labels"][:, 1:]
    keep = shift_labels != IGNORE
    parts = _decoder_and_head(model)
    with _autocast(batch["input_ids"].device.type, autocast):
        if parts is None or bool(keep.all()):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, targets = logits[:, :-1, :].reshape(-1, logits.size(-1)), shift_labels.reshape(-1)
        else:
            decoder, head = parts
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits, targets = head(hidden[:, :-1][keep]), shift_labels[keep]
    total = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return total, int(keep.sum())


def evaluate_loss(model: Any, examples: list[Example], *, batch_size: int, pad_id: int, device: str) -> float:
    """Token-weighted mean NLL over the label tokens of ``examples``."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in batches(examples, batch_size, None):
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            nll, n = token_nll(model, batch)
            total += float(nll)
            count += n
    if was_training:
        model.train()
    if count == 0:
        raise ValueError("validation split has no assistant tokens to score")
    return total / count


def make_optimizer(params: list[Any], *, learning_rate: float, weight_decay: float = 0.0,
                   kind: str = "adamw_torch"):
    """AdamW over ``params`` (``paged_adamw_8bit``: bitsandbytes' paged 8-bit AdamW, a GPU recipe)."""
    import torch

    if kind == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)


def make_scheduler(optimizer: Any, name: str, total_steps: int, *, warmup_ratio: float = 0.0,
                   warmup_steps: int = 0):
    """``transformers.get_scheduler(name)`` over ``total_steps``; the warmup is ``warmup_steps`` when set, else
    ``warmup_ratio`` of the run, never longer than the run."""
    from transformers import get_scheduler

    warmup = min(warmup_steps or math.ceil(warmup_ratio * total_steps), total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def plan_steps(n_examples: int, cfg: LoopConfig) -> int:
    """Optimizer steps of the whole run: epochs x ceil(batches / grad_accum), capped by ``max_steps``."""
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


# ----------------------------------------------------------------------------------------------- history

@dataclass
class History:
    """Per-step and per-epoch records of a run, kept as one JSON file."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps({"steps": self.steps, "epochs": self.epochs}, indent=1))
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> History:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(steps=list(data["steps"]), epochs=list(data["epochs"]))


# ------------------------------------------------------------------------------------------- checkpoints

@dataclass
class LoopState:
    """Where the loop is: the step counter and the position inside the current epoch."""

    step: int = 0
    epoch: int = 1
    groups_done: int = 0  # accumulation groups of ``epoch`` already stepped
    epoch_nll: float = 0.0
    epoch_tokens: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0


class Checkpoints:
    """The newest checkpoint of one run in ``folder``, tagged with the run's ``fingerprint``."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def save(self, state: LoopState, history: History, model: Any, optimizer: Any, scheduler: Any,
             scaler: Any = None) -> None:
        import torch

        tensors = {
            "params": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        with atomic_path(self.folder, is_dir=True) as tmp:
            torch.save(tensors, tmp / CHECKPOINT_TENSORS)
            history.write(tmp / HISTORY_FILE)
            atomic_write_text(tmp / CHECKPOINT_STATE,
                              json.dumps({"fingerprint": self.fingerprint, **asdict(state)}, indent=1))
        log.info("checkpoint at step %d in %s", state.step, self.folder)

    def load(self, model: Any, optimizer: Any, scheduler: Any, scaler: Any = None) -> tuple[LoopState, History] | None:
        """Restore the newest checkpoint of this run into model/optimizer/scheduler; None if there is none."""
        import torch

        try:
            meta = json.loads((self.folder / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if meta.pop("fingerprint", None) != self.fingerprint:
            log.info("ignoring checkpoint %s: it belongs to other settings or data", self.folder)
            return None
        tensors = torch.load(self.folder / CHECKPOINT_TENSORS, map_location="cpu", weights_only=False)
        named = dict(model.named_parameters())
        unknown = sorted(set(tensors["params"]) - set(named))
        if unknown:
            raise ValueError(f"{self.folder}: checkpoint has parameters the model lacks: {unknown[:5]}")
        with torch.no_grad():
            for name, value in tensors["params"].items():
                named[name].copy_(value.to(named[name].device))
        optimizer.load_state_dict(tensors["optimizer"])
        scheduler.load_state_dict(tensors["scheduler"])
        torch.set_rng_state(tensors["torch_rng"])
        if tensors.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda_rng"])
        if scaler is not None and tensors.get("scaler") is not None:
            scaler.load_state_dict(tensors["scaler"])
        return LoopState(**meta), History.read(self.folder / HISTORY_FILE)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


BEST_TENSORS = "best.pt"
BEST_STATE = "best.json"


def save_best(folder: Path, model: Any, record: dict[str, Any]) -> None:
    """The trainable parameters of the best epoch so far and its history record, replacing the previous best."""
    import torch

    with atomic_path(Path(folder), is_dir=True) as tmp:
        torch.save({n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}, tmp / BEST_TENSORS)
        atomic_write_text(tmp / BEST_STATE, json.dumps(record, indent=1))
    log.info("best checkpoint (val loss %.4f, epoch %d) in %s", record["val_loss"], record["epoch"], folder)


def load_best(folder: Path, model: Any) -> dict[str, Any]:
    """Copy the best epoch's parameters (see :func:`save_best`) into ``model``; its history record."""
    import torch

    folder = Path(folder)
    record = json.loads((folder / BEST_STATE).read_text(encoding="utf-8"))
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in torch.load(folder / BEST_TENSORS, map_location="cpu", weights_only=True).items():
            named[name].copy_(value.to(named[name].device))
    return record


# -------------------------------------------------------------------------------------------------- loop

@dataclass
class LoopResult:
    history: History
    steps: int
    tokens_seen: int
    train_seconds: float
    resumed_from_step: int
    stopped_early: dict[str, int] | None = None  # {"epoch", "best_epoch", "patience"} when patience ended the run

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / max(self.train_seconds, 1e-9)


def train_loop(
    model: Any,
    train: list[Example],
    val: list[Example],
    cfg: LoopConfig,
    *,
    device: str,
    pad_id: int,
    checkpoints: Checkpoints | None = None,
    progress: ProgressFn | None = log_progress,
    on_epoch_end: EpochEndFn | None = None,
    best_dir: Path | None = None,
) -> LoopResult:
    """Train the parameters of ``model`` that require gradients; validate after each epoch.

    With ``checkpoints``, the state is saved every ``cfg.checkpoint_every`` steps and at each epoch's end,
    and a matching checkpoint found there at the start is resumed from. Each epoch's history record holds
    train/val loss and perplexity, the learning rate and the run's tokens/s so far, plus whatever
    ``on_epoch_end(model, epoch)`` returns; with ``best_dir``, the epoch with the lowest validation loss so
    far is saved there (:func:`save_best`)."""
    import torch

    total_steps = plan_steps(len(train), cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no parameters that require gradients; nothing to train")
    optimizer = make_optimizer(trainable, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                               kind=cfg.optimizer)
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, total_steps, warmup_ratio=cfg.warmup_ratio)
    if cfg.autocast == "fp16" and device != "cuda":
        raise ValueError(f"profile {cfg.profile!r} of {cfg.role!r}: autocast fp16 needs CUDA (device here: {device}); "
                         "use bf16 or none")
    scaler = torch.amp.GradScaler("cuda") if cfg.autocast == "fp16" else None  # fp16 gradients underflow unscaled
    eval_kw = dict(batch_size=cfg.batch_size, pad_id=pad_id, device=device)
    if device == "cpu" and keep_freed_memory():
        log.info("CPU training: malloc keeps freed tensor memory for reuse (mmap threshold 1 GiB, trim 2 GiB)")

    state, history = LoopState(), History()
    restored = checkpoints.load(model, optimizer, scheduler, scaler) if checkpoints else None
    if restored:
        state, history = restored
        log.info("resuming from step %d (epoch %d) of %s", state.step, state.epoch, checkpoints.folder)
    resumed_from = state.step

    def save() -> None:
        if checkpoints is not None:
            checkpoints.save(state, history, model, optimizer, scheduler, scaler)

    spare = None
    if device == "cpu":  # torch's threads: the step's share, plus a core nobody else is using (re-checked)
        from distillery_assets.threads import apply_torch_threads, spare_cores

        spare = spare_cores(cfg.threads)
    model.train()
    stopped_early = None
    segment_start, seconds_before = time.perf_counter(), state.train_seconds
    while state.epoch <= cfg.epochs and state.step < total_steps:
        micro = batches(train, cfg.batch_size, random.Random(cfg.seed + state.epoch))
        groups = [micro[k : k + cfg.grad_accum] for k in range(0, len(micro), cfg.grad_accum)]
        for group in groups[state.groups_done :]:
            if state.step >= total_steps:
                break
            if spare is not None:
                threads, changed = spare.check()
                if changed:
                    apply_torch_threads(threads)
            loss, tokens = _accumulate(model, group, device, pad_id, state, cfg.autocast, scaler)
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)  # skipped (and the scale lowered) when a gradient overflowed
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.groups_done += 1
            state.epoch_nll += loss
            state.epoch_tokens += tokens
            state.train_seconds = seconds_before + time.perf_counter() - segment_start
            record = Progress(state.step, total_steps, state.epoch, loss / max(tokens, 1),
                              state.tokens_seen / max(state.train_seconds, 1e-9), scheduler.get_last_lr()[0])
            history.steps.append({**asdict(record), "ppl": record.ppl})
            if progress is not None:
                progress(record)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < total_steps:
                save()
        val_loss = evaluate_loss(model, val, **eval_kw)
        best_before = min((e["val_loss"] for e in history.epochs), default=math.inf)
        train_loss = state.epoch_nll / max(state.epoch_tokens, 1)
        state.train_seconds = seconds_before + time.perf_counter() - segment_start
        epoch_record = {"epoch": state.epoch, "steps": state.step, "train_loss": train_loss, "val_loss": val_loss,
                        "train_ppl": _ppl(train_loss), "val_ppl": _ppl(val_loss), "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": state.tokens_seen / max(state.train_seconds, 1e-9)}
        if spare is not None:
            epoch_record["threads"] = spare.summary()
        if on_epoch_end is not None:
            model.eval()
            with torch.no_grad():
                epoch_record.update(on_epoch_end(model, state.epoch) or {})
            model.train()
        history.epochs.append(epoch_record)
        log.info("epoch %d: train %.4f val %.4f (ppl %.2f)", state.epoch, train_loss, val_loss,
                 epoch_record["val_ppl"])
        if best_dir is not None and val_loss < best_before:
            save_best(best_dir, model, epoch_record)
        finished_epoch = state.epoch
        state.epoch, state.groups_done, state.epoch_nll, state.epoch_tokens = state.epoch + 1, 0, 0.0, 0
        state.train_seconds = seconds_before + time.perf_counter() - segment_start
        if state.step < total_steps and state.epoch <= cfg.epochs:
            save()  # also when patience stops the run here: a later run without it carries on from this state
            best_epoch = min(history.epochs, key=lambda e: e["val_loss"])["epoch"]
            if cfg.patience and finished_epoch - best_epoch >= cfg.patience:
                stopped_early = {"epoch": finished_epoch, "best_epoch": best_epoch, "patience": cfg.patience}
                log.info("stopped after epoch %d: no lower validation loss for %d epochs (best: epoch %d); "
                         "%d of %d steps run, the last epoch's state kept in the checkpoint", finished_epoch,
                         cfg.patience, best_epoch, state.step, total_steps)
                break
    if spare is not None:
        log.info("threads: %s", spare.summary())
    return LoopResult(history, state.step, state.tokens_seen, state.train_seconds, resumed_from, stopped_early)


def _accumulate(model: Any, group: list[list[Example]], device: str, pad_id: int, state: LoopState,
                autocast: str | None = None, scaler: Any = None) -> tuple[float, int]:
    """Forward/backward one accumulation group; gradients are weighted per label token across the group."""
    tensors = [{k: v.to(device) for k, v in collate(c, pad_id).items()} for c in group]
    group_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in tensors)
    group_nll = 0.0
    for batch in tensors:
        nll, _ = token_nll(model, batch, autocast)
        scaled = nll / max(group_tokens, 1)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        group_nll += float(nll.detach())
        state.tokens_seen += int(batch["attention_mask"].sum())
    return group_nll, group_tokens
