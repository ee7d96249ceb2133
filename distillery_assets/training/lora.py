"""Train a LoRA adapter with peft on the shared loop (``training.loop``).

Why our own loop and not ``transformers.Trainer``/TRL: it is short enough to read at once; it measures
exactly what we report (token-weighted validation loss of the untouched base and after each epoch on the
same assistant-only tokens), it calls our progress callback with tokens/s, checkpoints and resumes, and it
has no dependence on the fast-moving Trainer/TRL argument names (the seed's SFTTrainer call no longer exists).
What is LoRA-specific lives here: loading the (possibly 4-bit) base, attaching the adapter, saving it.

QLoRA (4-bit nf4 base, bf16 compute, paged 8-bit AdamW) is used when the profile asks for it; such a
profile refuses to run without CUDA rather than silently training something else.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from distillery_assets.device import pick_device
from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.training.chat_data import load_chat_split
from distillery_assets.training.config import TrainConfig
from distillery_assets.training.loop import (
    HISTORY_FILE, Checkpoints, ProgressFn, evaluate_loss, log_progress, seed_torch, train_loop,
)
from distillery_assets.training.results import EpochRecord, RejectRecord, SplitStats, TrainResult

log = logging.getLogger(__name__)

METRICS_FILE = "training_metrics.json"
# gradient checkpointing: the non-reentrant variant, said explicitly (torch warns when it is left unset and then
# runs the reentrant one, which needs inputs that require grad and recomputes differently)
CHECKPOINTING = {"use_reentrant": False}


def checkpoint_dir(out_dir: Path) -> Path:
    """Where an unfinished run of ``out_dir`` keeps its newest checkpoint (beside it, hidden)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.checkpoint"


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
        # use_reentrant explicit: peft passes {} on, so torch would warn and fall back to the reentrant variant
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=CHECKPOINTING)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
        if cfg.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=CHECKPOINTING)
            model.enable_input_require_grads()
    return model


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters. A bitsandbytes 4-bit weight packs two values per byte of its storage, so
    ``numel()`` counts half of a QLoRA base; peft's ``get_nb_trainable_parameters`` counts them whole."""
    counter = getattr(model, "get_nb_trainable_parameters", None)
    if counter is not None:
        trainable, total = counter()
        return int(trainable), int(total)
    params = list(model.parameters())
    return int(sum(p.numel() for p in params if p.requires_grad)), int(sum(p.numel() for p in params))


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


def train_lora(
    cfg: TrainConfig,
    base: str,
    train_path: Path,
    val_path: Path,
    out_dir: Path,
    *,
    fingerprint: str,
    progress: ProgressFn | None = log_progress,
) -> TrainResult:
    """Train, evaluate, save the adapter atomically to ``out_dir`` with its result (``METRICS_FILE``) and
    history; an interrupted run with the same ``fingerprint`` resumes from its checkpoint."""
    started = time.perf_counter()
    seed_torch(cfg.seed, cfg.threads)
    device = pick_device(cuda_required=cfg.cuda_required)
    tokenizer = load_tokenizer(base)
    train = load_chat_split(train_path, tokenizer, max_seq=cfg.max_seq, limit=cfg.max_train_examples)
    val = load_chat_split(val_path, tokenizer, max_seq=cfg.max_seq, limit=cfg.max_val_examples)
    if not train.examples:
        raise ValueError(f"{train_path}: no usable training examples ({len(train.rejects)} rejected)")
    if not val.examples:
        raise ValueError(f"{val_path}: no usable validation examples ({len(val.rejects)} rejected)")

    model = attach_lora(load_base_model(base, cfg, device), cfg)
    pad_id = tokenizer.pad_token_id
    with model.disable_adapter():
        base_val_loss = evaluate_loss(model, val.examples, batch_size=cfg.batch_size, pad_id=pad_id, device=device)
    log.info("base model validation loss %.4f on %d examples", base_val_loss, len(val.examples))

    checkpoints = Checkpoints(checkpoint_dir(out_dir), fingerprint)
    run = train_loop(model, train.examples, val.examples, cfg, device=device, pad_id=pad_id,
                     checkpoints=checkpoints, progress=progress)
    last = run.history.epochs[-1]
    result = TrainResult(
        fingerprint=fingerprint,
        role=cfg.role,
        profile=cfg.profile,
        base_model=cfg.base_model,
        config_fingerprint=cfg.fingerprint(),
        device=device,
        qlora=bool(cfg.quantization.load_in_4bit and device == "cuda"),
        base_val_loss=base_val_loss,
        val_loss=last["val_loss"],
        train_loss=last["train_loss"],
        improvement=base_val_loss - last["val_loss"],
        epochs=[EpochRecord(**{k: e[k] for k in EpochRecord.model_fields}) for e in run.history.epochs],
        steps=run.steps,
        resumed_from_step=run.resumed_from_step,
        train=SplitStats(**train.stats()),
        val=SplitStats(**val.stats()),
        rejects=[RejectRecord(source=r.source, reason=r.reason) for r in (train.rejects + val.rejects)[:50]],
        trainable_params=parameter_counts(model)[0],
        total_params=parameter_counts(model)[1],
        tokens_per_s=run.tokens_per_s,
        train_seconds=run.train_seconds,
        wall_seconds=time.perf_counter() - started,
    )
    with atomic_path(Path(out_dir), is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        run.history.write(tmp / HISTORY_FILE)
        atomic_write_text(tmp / METRICS_FILE, result.record_json())
        atomic_write_text(tmp / "train_config.json", json.dumps(cfg.model_dump(), indent=2))
    checkpoints.clear()
    return result
