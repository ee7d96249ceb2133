"""Perplexity on the assistant tokens of a validation split, for a torch model and for a GGUF file.

Both sides score the *same token ids* (from the Hugging Face tokenizer) at the same positions, so the two
numbers are directly comparable: the gap is what conversion + quantization cost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distillery_assets.training.chat_data import IGNORE, Example


def torch_perplexity(model: Any, examples: list[Example], *, pad_id: int, device: str = "cpu",
                     batch_size: int = 4) -> float:
    from distillery_assets.training.loop import evaluate_loss

    return math.exp(evaluate_loss(model, examples, batch_size=batch_size, pad_id=pad_id, device=device))


def gguf_perplexity(gguf_file: Path, examples: list[Example], *, threads: int = 2) -> float:
    """Run each example through llama.cpp with ``logits_all`` and score the assistant tokens."""
    import numpy as np
    from llama_cpp import Llama

    longest = max(len(e.input_ids) for e in examples)
    llm = Llama(model_path=str(gguf_file), n_ctx=longest + 8, n_batch=longest + 8, n_ubatch=longest + 8,
                logits_all=True, n_threads=threads, verbose=False)
    total, count = 0.0, 0
    try:
        for example in examples:
            llm.reset()
            llm.eval(example.input_ids)
            logits = np.asarray(llm.scores[: len(example.input_ids)], dtype=np.float64)
            peak = logits.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
            for t in range(len(example.input_ids) - 1):
                target = example.labels[t + 1]
                if target == IGNORE:
                    continue
                total += log_norm[t] - logits[t, target]
                count += 1
    finally:
        llm.close()
    if count == 0:
        raise ValueError("no assistant tokens to score")
    return math.exp(total / count)
