"""The GPU steps, callable the same way in process and on Modal.

``STEPS[name](spec, root) -> dict``: ``spec`` is JSON-able and every path in it is relative to ``root``
(``data_dir()`` locally, ``/vol`` on Modal). Each step skips work that is already done: a finished
adapter or GGUF whose recorded fingerprint (settings + input file hashes) matches is reused, and its
saved metrics are returned with ``"reused": true``.

spec for ``train_lora``::

    {"config": TrainConfig.model_dump(), "train": "poetry/poet/train.jsonl",
     "val": "poetry/poet/val.jsonl", "adapter_dir": "models/lora/poet"}

spec for ``export_gguf``::

    {"config": ..., "adapter_dir": "models/lora/poet", "val": "...", "out_dir": "models/gguf/poet",
     "chat_messages": [{"role": "system", ...}, {"role": "user", ...}],   # optional chat check
     "chat_max_tokens": 512}                                               # optional, default max_seq
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_text
from distillery_assets.paths import safe_child
from distillery_assets.training.base_model import resolve_base
from distillery_assets.training.config import TrainConfig
from distillery_assets.training.lora import METRICS_FILE, Progress, train_lora

log = logging.getLogger(__name__)

StepFn = Callable[[dict[str, Any], Path], dict[str, Any]]


def _path(spec: dict[str, Any], key: str, root: Path) -> Path:
    value = spec.get(key)
    if not isinstance(value, str):
        raise ValueError(f"step spec: field {key!r} missing or not a relative path string")
    return safe_child(Path(root), value, source=f"step spec field {key!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _base_identity(base: str) -> str:
    marker = Path(base) / "distillery_base.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8")).get("source_sha256", base)
    return base


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _log_progress(p: Progress) -> None:
    log.info("step %d/%d epoch %d loss %.4f %.0f tok/s lr %.2e", p.step, p.total_steps, p.epoch, p.loss,
             p.tokens_per_s, p.lr)


def train_lora_step(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    cfg = TrainConfig.model_validate(spec["config"])
    train, val = _path(spec, "train", root), _path(spec, "val", root)
    adapter_dir = _path(spec, "adapter_dir", root)
    base = resolve_base(cfg.base_model, Path(root))
    fingerprint = hashlib.sha256(
        "|".join([cfg.fingerprint(), _sha256(train), _sha256(val), _base_identity(base)]).encode()
    ).hexdigest()[:16]
    done = _read_json(adapter_dir / METRICS_FILE)
    if done and done.get("fingerprint") == fingerprint and (adapter_dir / "adapter_config.json").is_file():
        return {**done, "reused": True}
    metrics = train_lora(cfg, base, train, val, adapter_dir, progress=_log_progress)
    metrics["fingerprint"] = fingerprint
    atomic_write_text(adapter_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    return {**metrics, "reused": False}


def export_gguf_step(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    from distillery_assets.training.export import export_gguf, gguf_file_name

    cfg = TrainConfig.model_validate(spec["config"])
    adapter_dir, val = _path(spec, "adapter_dir", root), _path(spec, "val", root)
    out_dir = _path(spec, "out_dir", root)
    trained = _read_json(adapter_dir / METRICS_FILE)
    if not trained:
        raise FileNotFoundError(f"{adapter_dir}: no finished adapter ({METRICS_FILE} missing); run train_lora")
    chat_messages = spec.get("chat_messages")
    fingerprint = hashlib.sha256(
        json.dumps([trained.get("fingerprint"), cfg.export.model_dump(), cfg.max_seq, _sha256(val),
                    chat_messages, spec.get("chat_max_tokens")], sort_keys=True).encode()
    ).hexdigest()[:16]
    final = out_dir / gguf_file_name(cfg.base_model, cfg.role, cfg.export.quant)
    record = final.with_suffix(".json")
    done = _read_json(record)
    if done and done.get("fingerprint") == fingerprint and final.is_file():
        return {**done, "reused": True}
    base = resolve_base(cfg.base_model, Path(root))
    metrics = export_gguf(cfg, base, adapter_dir, val, out_dir, chat_messages=chat_messages,
                          chat_max_tokens=int(spec.get("chat_max_tokens") or cfg.max_seq),
                          threads=cfg.threads or os.cpu_count() or 2)
    metrics["fingerprint"] = fingerprint
    metrics["gguf_path"] = str(final.relative_to(Path(root).resolve()))
    atomic_write_text(record, json.dumps(metrics, indent=2))
    return {**metrics, "reused": False}


STEPS: dict[str, StepFn] = {"train_lora": train_lora_step, "export_gguf": export_gguf_step}
