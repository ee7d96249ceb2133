"""LoRA adapter -> merged checkpoint -> GGUF f16 -> quantized GGUF, with the checks that make it usable.

The adapter is merged into a *full-precision* copy of the base (never a 4-bit one: merging into nf4
weights would bake quantization error into the result before llama.cpp quantizes again). The merged
folder and the f16 GGUF are intermediates in a temporary folder that is always deleted; only
the GGUF (``TrainConfig.gguf_file_name``: ``{base}-{role}-{quant}.gguf``) remains, written atomically.

Checks recorded in the result: declared file type and the real per-tensor types (small models have rows
not divisible by 256, where llama.cpp falls back to Q5_0/Q8_0 for those tensors), chat template and
end-of-turn token present, perplexity of the GGUF vs the merged torch model on the whole validation split
plus a fixed held-out text (``ExportSettings.heldout_text``), and a chat reply that must end on the
end-of-turn token (finish_reason "stop", not "length") within ``chat_max_tokens``.

The quantization follows the config as the seed's ``export_pipeline.yaml`` describes it: the primary
(``quant``, Q4_K_M) first; when its measured degradation exceeds ``max_ppl_degradation``, each of
``fallback_quants`` (Q5_K_M, then Q8_0) in turn, from the same f16 intermediate, until one is within the
bound. Every attempt is recorded; the kept file is named after its own quantization and the others are
removed. If none is within the bound, the least degraded is kept and the check fails.
They come back in an ``ExportResult``; the asset turns that result into its checks without re-running any.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from distillery_assets.device import pick_device
from distillery_assets.io import atomic_path
from distillery_assets.threads import apply_torch_threads, llama_threads, spare_cores
from distillery_assets.training.chat_data import load_chat_split
from distillery_assets.training.config import TrainConfig
from distillery_assets.training.gguf_tools import convert_to_gguf, inspect_gguf, quantize_gguf
from distillery_assets.training.perplexity import (HeldoutText, Score, combined, gguf_scores, text_examples,
                                                   torch_score)
from distillery_assets.training.results import ChatReply, ExportResult, GGUFInfo, PerplexitySet, QuantAttempt

log = logging.getLogger(__name__)


def merge_adapter(base: str, adapter_dir: Path, dtype_name: str = "float32"):
    """Load the base in full precision, apply the adapter, fold it into the weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype_name))
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def chat_check(gguf_file: Path, messages: list[dict[str, str]], *, max_tokens: int = 128,
               repeat_penalty: float = 1.0, threads: int | None = None) -> ChatReply:
    """One greedy chat reply from the GGUF through llama.cpp's own chat template handling. ``repeat_penalty``
    (the tutor's own sampling uses 1.1) keeps a small model's greedy reply from looping until ``max_tokens``.
    ``threads`` None: the thread policy's (``distillery_assets.threads``)."""
    from llama_cpp import Llama

    n_ctx = max(2048, 2 * max_tokens + 256)  # prompt (<= max_seq in training) + reply
    llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, **llama_threads(threads), verbose=False, seed=0)
    try:
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                         repeat_penalty=repeat_penalty)
    finally:
        llm.close()
    choice = out["choices"][0]
    return ChatReply(messages=messages, prompt=messages[-1]["content"], reply=choice["message"]["content"] or "",
                     finish_reason=choice["finish_reason"], completion_tokens=out["usage"]["completion_tokens"],
                     max_tokens=max_tokens)


@dataclass
class _EvalSet:
    name: str
    source: str
    examples: list
    merged: Score | None = None
    f16: Score | None = None


def _eval_sets(cfg: TrainConfig, tokenizer, val_path: Path, heldout: HeldoutText | None) -> list[_EvalSet]:
    """The validation split (whole, unless ``ppl_max_examples`` caps it) and the held-out text's windows."""
    ex = cfg.export
    val = load_chat_split(val_path, tokenizer, max_seq=cfg.max_seq, limit=ex.ppl_max_examples)
    if not val.examples:
        raise ValueError(f"{val_path}: no usable validation examples for the perplexity check")
    sets = [_EvalSet("validation", Path(val_path).name, val.examples)]
    if heldout is not None:
        window = ex.heldout_window or cfg.max_seq
        sets.append(_EvalSet("held-out", heldout.name,
                             text_examples(tokenizer, heldout.text, window=window, source=heldout.name)))
    return sets


def _quant_path(cfg: TrainConfig, final: Path, quant: str) -> Path:
    return final.parent / cfg.gguf_file_name_for(quant)


def _attempt(quant: str, path: Path, sets: list[_EvalSet], scores: list[Score], limit: float) -> QuantAttempt:
    merged = combined([s.merged for s in sets])
    together = combined(scores)
    degradation = together.ppl / merged.ppl - 1.0
    return QuantAttempt(quant=quant, ppl_gguf=together.ppl, ppl_degradation=degradation,
                        within_limit=degradation <= limit, gguf_bytes=path.stat().st_size,
                        ppl_by_set={s.name: sc.ppl for s, sc in zip(sets, scores, strict=True)})


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
    heldout: HeldoutText | None = None,
    threads: int | None = None,
) -> ExportResult:
    """Merge, convert, quantize (primary, then fallbacks while over the bound), measure. ``final`` and
    ``gguf_path`` name the primary quantization's file; a fallback is written beside it under its own name
    (the result's ``gguf_file``/``gguf_path`` say which file was kept). ``threads`` (torch, llama.cpp and the
    quantizer) None: the thread policy's (``distillery_assets.threads``)."""
    from transformers import AutoTokenizer

    apply_torch_threads(threads)
    spare = spare_cores(threads)

    def phase_threads() -> int | None:
        """Threads for the next phase: ``threads`` (None: the policy's share) unless a core is free now."""
        if spare.fixed:
            return threads
        n, changed = spare.check()
        if changed:
            apply_torch_threads(n)
        return n

    ex = cfg.export
    final = Path(final)
    out_dir = final.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    sets = _eval_sets(cfg, tokenizer, val_path, heldout)

    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir))
    try:
        t = time.perf_counter()
        phase_threads()
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
        phase_threads()
        device = pick_device()
        merged = merged.to(device)
        for s in sets:
            s.merged = torch_score(merged, s.examples, pad_id=tokenizer.pad_token_id or eot_id, device=device)
        del merged
        timings["ppl_merged_s"] = time.perf_counter() - t

        t = time.perf_counter()
        intermediate = work / f"model-{ex.intermediate}.gguf"
        convert_to_gguf(merged_dir, intermediate, outtype=ex.intermediate)
        merged_bytes = sum(f.stat().st_size for f in merged_dir.rglob("*") if f.is_file())
        shutil.rmtree(merged_dir)
        intermediate_bytes = intermediate.stat().st_size
        timings["convert_s"] = time.perf_counter() - t

        if ex.ppl_f16:
            t = time.perf_counter()
            for s, score in zip(sets, gguf_scores(intermediate, [s.examples for s in sets], threads=phase_threads()),
                                strict=True):
                s.f16 = score
            timings["ppl_f16_s"] = time.perf_counter() - t

        tried: list[tuple[QuantAttempt, list[Score], Path]] = []
        for quant in ex.candidate_quants:
            path = _quant_path(cfg, final, quant)
            t = time.perf_counter()
            with atomic_path(path) as tmp:
                quantize_gguf(intermediate, tmp, quant, threads=llama_threads(phase_threads())["n_threads_batch"])
            timings[f"quantize_{quant}_s"] = time.perf_counter() - t
            t = time.perf_counter()
            scores = gguf_scores(path, [s.examples for s in sets], threads=phase_threads())
            timings[f"ppl_{quant}_s"] = time.perf_counter() - t
            attempt = _attempt(quant, path, sets, scores, ex.max_ppl_degradation)
            log.info("export %s: %s perplexity %+.2f%% vs merged (limit %.1f%%)", cfg.role, quant,
                     100 * attempt.ppl_degradation, 100 * ex.max_ppl_degradation)
            tried.append((attempt, scores, path))
            if attempt.within_limit:
                break
        intermediate.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = next((x for x in tried if x[0].within_limit), None) or min(tried, key=lambda x: x[0].ppl_degradation)
    kept, kept_scores, kept_path = best
    attempts = [a for a, _, _ in tried if a is not kept] + [kept]
    for quant in ex.candidate_quants:  # one GGUF per folder: the kept one (earlier runs' other quants go too)
        other = _quant_path(cfg, final, quant)
        if other != kept_path:
            other.unlink(missing_ok=True)
            other.with_suffix(".json").unlink(missing_ok=True)

    info = GGUFInfo.model_validate(inspect_gguf(kept_path))
    merged_all = combined([s.merged for s in sets])
    f16_all = combined([s.f16 for s in sets]) if ex.ppl_f16 else None

    chat = None
    if chat_messages:
        t = time.perf_counter()
        chat = chat_check(kept_path, chat_messages, max_tokens=chat_max_tokens,
                          repeat_penalty=ex.chat_repeat_penalty, threads=phase_threads())
        timings["chat_s"] = time.perf_counter() - t
    log.info("export %s: threads %s", cfg.role, spare.summary())

    kept_rel = f"{gguf_path.rsplit('/', 1)[0]}/{kept_path.name}" if "/" in gguf_path else kept_path.name
    return ExportResult(
        fingerprint=fingerprint,
        gguf_file=kept_path.name,
        gguf_path=kept_rel,
        quant=kept.quant,
        primary_quant=ex.quant,
        fallback_quants=list(ex.fallback_quants),
        quant_attempts=attempts,
        intermediate=ex.intermediate,
        merge_dtype=ex.merge_dtype,
        gguf=info,
        merged_bytes=merged_bytes,
        intermediate_bytes=intermediate_bytes,
        gguf_bytes=info.bytes,
        ppl_merged=merged_all.ppl,
        ppl_gguf=kept.ppl_gguf,
        ppl_intermediate_gguf=f16_all.ppl if f16_all else None,
        ppl_degradation=kept.ppl_degradation,
        ppl_limit=ex.max_ppl_degradation,
        ppl_degradation_ok=kept.within_limit,  # the one place this is judged
        ppl_examples=len(sets[0].examples),
        ppl_tokens=merged_all.tokens,
        ppl_sets=[PerplexitySet(name=s.name, source=s.source, examples=len(s.examples), tokens=s.merged.tokens,
                                ppl_merged=s.merged.ppl, ppl_gguf=sc.ppl, ppl_f16=s.f16.ppl if s.f16 else None)
                  for s, sc in zip(sets, kept_scores, strict=True)],
        device=device,
        chat=chat,
        timings=timings,
    )
