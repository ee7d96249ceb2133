"""Train a LoRA adapter with peft and a plain torch loop.

Why a plain loop and not ``transformers.Trainer``/TRL: the loop is sixty lines a reader takes in at once;
it measures exactly what we report (token-weighted validation loss of the untouched base and after each
epoch on the same assistant-only tokens), it calls our progress callback with tokens/s, and it has no
dependence on the fast-moving Trainer/TRL argument names (the seed's SFTTrainer call no longer exists).

QLoRA (4-bit nf4 base, bf16 compute, paged 8-bit AdamW) is used when the profile asks for it; such a
profile refuses to run without CUDA rather than silently training something else.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.training.chat_data import IGNORE, Example, collate, load_chat_split
from distillery_assets.training.config import TrainConfig

log = logging.getLogger(__name__)

METRICS_FILE = "training_metrics.json"


@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    tokens_per_s: float
    lr: float


ProgressFn = Callable[[Progress], None]


def pick_device(cfg: TrainConfig) -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if cfg.needs_cuda:
        raise RuntimeError(
            f"profile {cfg.profile!r} of {cfg.role!r} is a GPU recipe (4-bit QLoRA / paged 8-bit AdamW) and no "
            "CUDA device is present; use profile cpu_small here or the modal compute backend"
        )
    return "cpu"


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"{base}: tokenizer has no chat template; cannot format ChatML records")
    return tokenizer


def load_base_model(base: str, cfg: TrainConfig, device: str):
    """The frozen base: full precision on CPU, 4-bit nf4 on CUDA when the profile says QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    q = cfg.quantization
    if q.load_in_4bit and device == "cuda":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        )
        model = AutoModelForCausalLM.from_pretrained(base, quantization_config=bnb, dtype=dtype, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
    return model


def attach_lora(model: Any, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias=cfg.lora.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _batches(examples: list[Example], size: int, rng: random.Random | None) -> list[list[Example]]:
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    return [[examples[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def _token_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token NLL over label tokens, and how many there were."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = batch["labels"][:, 1:]
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )
    return total, int((shift_labels != IGNORE).sum())


def evaluate_loss(model: Any, examples: list[Example], *, batch_size: int, pad_id: int, device: str) -> float:
    """Token-weighted mean NLL over the assistant tokens of ``examples``."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in _batches(examples, batch_size, None):
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            nll, n = _token_nll(model, batch)
            total += float(nll)
            count += n
    if was_training:
        model.train()
    if count == 0:
        raise ValueError("validation split has no assistant tokens to score")
    return total / count


def _optimizer(cfg: TrainConfig, params: list[Any]):
    import torch

    if cfg.optimizer == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def train_lora(
    cfg: TrainConfig,
    base: str,
    train_path: Path,
    val_path: Path,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train, evaluate, save the adapter atomically to ``out_dir``; return the metrics (also saved there)."""
    import torch
    from transformers import get_scheduler

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg)
    tokenizer = load_tokenizer(base)
    train = load_chat_split(train_path, tokenizer, max_seq=cfg.max_seq, limit=cfg.max_train_examples)
    val = load_chat_split(val_path, tokenizer, max_seq=cfg.max_seq, limit=cfg.max_val_examples)
    if not train.examples:
        raise ValueError(f"{train_path}: no usable training examples ({len(train.rejects)} rejected)")
    if not val.examples:
        raise ValueError(f"{val_path}: no usable validation examples ({len(val.rejects)} rejected)")

    model = attach_lora(load_base_model(base, cfg, device), cfg)
    pad_id = tokenizer.pad_token_id
    eval_kw = dict(batch_size=cfg.batch_size, pad_id=pad_id, device=device)
    with model.disable_adapter():
        base_val_loss = evaluate_loss(model, val.examples, **eval_kw)
    log.info("base model validation loss %.4f on %d examples", base_val_loss, len(val.examples))

    steps_per_epoch = math.ceil(math.ceil(len(train.examples) / cfg.batch_size) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(cfg, trainable)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps), num_training_steps=total_steps,
    )

    history: list[dict[str, Any]] = []
    step, tokens_seen, train_started = 0, 0, time.perf_counter()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        if step >= total_steps:
            break
        rng = random.Random(cfg.seed + epoch)
        micro = _batches(train.examples, cfg.batch_size, rng)
        epoch_nll, epoch_tokens = 0.0, 0
        for start in range(0, len(micro), cfg.grad_accum):
            if step >= total_steps:
                break
            group = micro[start : start + cfg.grad_accum]
            batches = [{k: v.to(device) for k, v in collate(c, pad_id).items()} for c in group]
            group_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
            group_nll = 0.0
            for batch in batches:
                nll, _ = _token_nll(model, batch)
                (nll / max(group_tokens, 1)).backward()
                group_nll += float(nll.detach())
                tokens_seen += int(batch["attention_mask"].sum())
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            epoch_nll += group_nll
            epoch_tokens += group_tokens
            if progress is not None:
                elapsed = max(time.perf_counter() - train_started, 1e-9)
                progress(Progress(step, total_steps, epoch, group_nll / max(group_tokens, 1),
                                  tokens_seen / elapsed, scheduler.get_last_lr()[0]))
        val_loss = evaluate_loss(model, val.examples, **eval_kw)
        history.append({
            "epoch": epoch, "steps": step,
            "train_loss": epoch_nll / max(epoch_tokens, 1), "val_loss": val_loss,
        })
        log.info("epoch %d: train %.4f val %.4f", epoch, history[-1]["train_loss"], val_loss)
    train_seconds = time.perf_counter() - train_started

    final_val = history[-1]["val_loss"]
    metrics: dict[str, Any] = {
        "role": cfg.role,
        "profile": cfg.profile,
        "base_model": cfg.base_model,
        "config_fingerprint": cfg.fingerprint(),
        "device": device,
        "qlora": bool(cfg.quantization.load_in_4bit and device == "cuda"),
        "base_val_loss": base_val_loss,
        "val_loss": final_val,
        "train_loss": history[-1]["train_loss"],
        "improvement": base_val_loss - final_val,
        "epochs": history,
        "steps": step,
        "train": train.stats(),
        "val": val.stats(),
        "rejects": [asdict(r) for r in (train.rejects + val.rejects)[:50]],
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    with atomic_path(Path(out_dir), is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / METRICS_FILE, json.dumps(metrics, indent=2))
        atomic_write_text(tmp / "train_config.json", json.dumps(cfg.model_dump(), indent=2))
    return metrics
