"""Benchmark the generator models of an OpenAI-compatible endpoint (LM Studio, llama.cpp server, vLLM...).

For each model the endpoint lists (or --models): tokens/s, time to first token (streamed), time per
response, projected hours per 1,000 responses, and a 1-5 rating by --evaluator-model. Ranked table on
stdout, full results as JSON with --out. The prompt is the real theme_chatml generator prompt built from a
chunk of the shipped sample books.

    python benchmarks/theme_models.py --base-url http://localhost:1234/v1 --evaluator-model qwen2.5-7b-instruct
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillery_assets.paths import config_dir, inputs_dir  # noqa: E402
from distillery_assets.theme import books, chunking, modelbench  # noqa: E402
from distillery_assets.theme.generate import GenerationSettings  # noqa: E402
from distillery_assets.theme.setup import build_generator  # noqa: E402


def sample_prompt(book_id: int = 624, chunk_index: int = 40) -> list[dict[str, str]]:
    """The real generator prompt for one chunk of a shipped sample book."""
    batch = books.from_local_dir(inputs_dir() / "gutenberg", books.BookSelection(categories={"x": [book_id]}))
    chunk = list(chunking.chunk_book(batch.records[0]))[chunk_index]
    with tempfile.TemporaryDirectory() as work:
        gen = build_generator(config_dir() / "theme", Path(work), GenerationSettings(examples_per_chunk=1))
        return gen.prompt_messages(chunk)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://localhost:1234/v1")
    p.add_argument("--api-key-env", default=None, help="NAME of the env var holding the API key")
    p.add_argument("--models", default=None, help="comma-separated ids (default: all the endpoint lists)")
    p.add_argument("--models-filter", default=None, help="comma-separated substrings to keep")
    p.add_argument("--evaluator-model", default=None)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    settings = modelbench.BenchSettings(
        base_url=a.base_url, api_key_env=a.api_key_env, evaluator_model=a.evaluator_model, max_tokens=a.max_tokens,
        models=a.models.split(",") if a.models else None,
        models_filter=a.models_filter.split(",") if a.models_filter else None)
    result = modelbench.run_benchmark(settings, sample_prompt())
    print(modelbench.markdown_table(result))
    if a.out:
        from distillery_assets.io import atomic_write_text

        atomic_write_text(a.out, json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if any(r["ok"] for r in result["ranked"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
