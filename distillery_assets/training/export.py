"""LoRA adapter -> merged checkpoint -> GGUF f16 -> quantized GGUF, with the checks that make it usable.

The adapter is merged into a *full-precision* copy of the base (never a 4-bit one: merging into nf4
weights would bake quantization error into the result before llama.cpp quantizes again). The merged
folder and the f16 GGUF are intermediates in a temporary folder that is always deleted; only
the GGUF (``TrainConfig.gguf_file_name``: ``{base}-{role}-{quant}.gguf``) remains, written atomically.

Checks recorded in the result: declared file type and the real per-tensor types (small models have rows
not divisible by 256, where llama.cpp falls back to Q5_0/Q8_0 for those tensors), chat template and
end-of-turn token present, perplexity of the GGUF vs the merged torch model on the validation split,
and a chat reply that must end on the end-of-turn token (finish_reason "stop", not "length").
They come back in an ``ExportResult``; the asset turns that result into its checks without re-running any.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from distillery_assets.io import atomic_path
from distillery_assets.training.chat_data import load_chat_split
from distillery_assets.training.config import TrainConfig
from distillery_assets.training.gguf_tools import convert_to_gguf, inspect_gguf, quantize_gguf
from distillery_assets.training.perplexity import gguf_perplexity, torch_perplexity
from distillery_assets.training.results import ChatReply, ExportResult, GGUFInfo

log = logging.getLogger(__name__)


def merge_adapter(base: str, adapter_dir: Path, dtype_name: str = "float32"):
    """Load the base in full precision, apply the adapter, fold it into the weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype_name))
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def chat_check(gguf_file: Path, messages: list[dict[str, str]], *, max_tokens: int = 128,
               threads: int = 2) -> ChatReply:
    """One greedy chat reply from the GGUF through llama.cpp's own chat template handling."""
    from llama_cpp import Llama

    n_ctx = max(2048, 2 * max_tokens + 256)  # prompt (<= max_seq in training) + reply
    llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0)
    try:
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0)
    finally:
        llm.close()
    choice = out["choices"][0]
    return ChatReply(messages=messages, prompt=messages[-1]["content"], reply=choice["message"]["content"] or "",
                     finish_reason=choice["finish_reason"], completion_tokens=out["usage"]["completion_tokens"],
                     max_tokens=max_tokens)


def export_gguf(
    cfg: TrainConfig,
    base: str,
    adapter_dir: Path,
    val_path: Path,
    final: Path,
    *,
    fingerprint: str,
    gguf_path: str,
    chat_messages: list[dict[str, str]] | None = None,
    chat_max_tokens: int = 256,
    threads: int = 2,
) -> ExportResult:
    """Merge, convert, quantize, measure; the GGUF is written to ``final`` (``gguf_path`` relative to the
    step's root, recorded in the result)."""
    from transformers import AutoTokenizer

    ex = cfg.export
    final = Path(final)
    out_dir = final.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    val = load_chat_split(val_path, tokenizer, max_seq=cfg.max_seq, limit=ex.ppl_max_examples)
    if not val.examples:
        raise ValueError(f"{val_path}: no usable validation examples for the perplexity check")

    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir))
    try:
        t = time.perf_counter()
        merged = merge_adapter(base, adapter_dir, ex.merge_dtype)
        eot_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        merged.config.eos_token_id = eot_id
        if merged.generation_config is not None:
            merged.generation_config.eos_token_id = eot_id
        merged_dir = work / "merged"
        merged.save_pretrained(merged_dir, safe_serialization=True)
        tokenizer.save_pretrained(merged_dir)
        timings["merge_s"] = time.perf_counter() - t

        t = time.perf_counter()
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        merged_ppl = torch_perplexity(merged.to(device), val.examples, pad_id=tokenizer.pad_token_id or eot_id,
                                      device=device)
        del merged
        timings["ppl_merged_s"] = time.perf_counter() - t

        t = time.perf_counter()
        intermediate = work / f"model-{ex.intermediate}.gguf"
        convert_to_gguf(merged_dir, intermediate, outtype=ex.intermediate)
        merged_bytes = sum(f.stat().st_size for f in merged_dir.rglob("*") if f.is_file())
        shutil.rmtree(merged_dir)
        intermediate_bytes = intermediate.stat().st_size
        timings["convert_s"] = time.perf_counter() - t

        ppl_f16 = None
        if ex.ppl_f16:
            t = time.perf_counter()
            ppl_f16 = gguf_perplexity(intermediate, val.examples, threads=threads)
            timings["ppl_f16_s"] = time.perf_counter() - t

        t = time.perf_counter()
        with atomic_path(final) as tmp:
            quantize_gguf(intermediate, tmp, ex.quant, threads=threads)
        intermediate.unlink()
        timings["quantize_s"] = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = GGUFInfo.model_validate(inspect_gguf(final))
    t = time.perf_counter()
    gguf_ppl = gguf_perplexity(final, val.examples, threads=threads)
    timings["ppl_gguf_s"] = time.perf_counter() - t
    degradation = gguf_ppl / merged_ppl - 1.0

    chat = None
    if chat_messages:
        t = time.perf_counter()
        chat = chat_check(final, chat_messages, max_tokens=chat_max_tokens, threads=threads)
        timings["chat_s"] = time.perf_counter() - t

    return ExportResult(
        fingerprint=fingerprint,
        gguf_file=final.name,
        gguf_path=gguf_path,
        quant=ex.quant,
        intermediate=ex.intermediate,
        merge_dtype=ex.merge_dtype,
        gguf=info,
        merged_bytes=merged_bytes,
        intermediate_bytes=intermediate_bytes,
        gguf_bytes=info.bytes,
        ppl_merged=merged_ppl,
        ppl_gguf=gguf_ppl,
        ppl_intermediate_gguf=ppl_f16,
        ppl_degradation=degradation,
        ppl_limit=ex.max_ppl_degradation,
        ppl_degradation_ok=degradation <= ex.max_ppl_degradation,  # the one place this is judged
        ppl_examples=len(val.examples),
        device=device,
        chat=chat,
        timings=timings,
    )
