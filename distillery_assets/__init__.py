"""Distillery: LLM training-data and fine-tuning pipelines, as one Dagster code location plus the library
that does the work.

What this package holds:

* :mod:`distillery_assets.definitions` -- the Dagster code location (``dagster dev -m
  distillery_assets.definitions``). It assembles the asset modules of the top-level ``assets`` package,
  the resources of ``resources`` and the IO manager of ``io_managers``; those three packages are the only
  Dagster-aware code.
* Everything else is a Dagster-free library (plain Python, usable from scripts and tests):

  ``corpus``      prompt tables, prompts.txt leaves, corpus generation plan, quality checks, run summary
  ``poetry``      poetry configs, poem sources, the educator/poet task prompts, quality gate, tutor loop
  ``theme``       Gutenberg books, chunking, keyword filtering, persona ChatML generation, model bench
  ``datasets``    the one ChatML dataset module (dedupe, split rule, leakage, validation)
  ``training``    fine-tuning (LoRA, merge, GGUF export), perplexity, loss reports, model card input
  ``llm``         the LLM client: providers, cache, limits, retries, JSON re-asks, usage; the task seam
  ``catalog``     the DuckDB catalogue of artefacts, sources, LLM calls and runs (``python -m
                  distillery_assets.catalog``)
  ``hub``         Hugging Face Hub model and dataset cards (uploading is ``resources.hub``)
  ``io``          atomic writes, JSONL, the one sha256 helper, the one YAML loader
  ``markdown``    the one markdown-table and preview helper
  ``paths``, ``partitions``, ``embedded``  data/config/input folders, partition definitions, bundled models

The loopback fakes of the provider APIs used by tests and benchmarks live in ``tests.support.fakeapi``,
outside the shipped package.
"""

import logging

# transformers imports bitsandbytes, which on CPUs with AVX-512 BF16 logs at import that it could not fetch a 4-bit
# CPU kernel from the Hub (through the `kernels` package). 4-bit loading here is CUDA-only (training/lora.py) and
# the Hub is unreachable offline, so that warning says nothing to act on; only that one logger is raised to errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import warnings

# peft (0.21) reads the model's `is_gradient_checkpointing`, which transformers 5 deprecated in favour of
# `is_activation_checkpointing`; every LoRA wrap and adapter load then warns about code that is peft's, not ours.
# Only that one message is ignored.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
