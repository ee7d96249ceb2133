"""Wall time of each stage of the fine-tune chain on this machine, and the quality numbers beside them.

    python benchmarks/training_chain.py [--role poet] [--profile cpu_small] [--data-dir /tmp/bench]

Runs the real steps (the same typed specs the Dagster assets hand to the compute resource) on the
demo ChatML set from ``distillery_assets.training.demo_data``:
base checkpoint (de-quantize the bundled GGUF) -> LoRA -> merge -> GGUF f16 -> Q4_K_M -> perplexity ->
chat check. Prints one table (stage, seconds) and the losses, perplexities and chat finish reason.
The baseline for comparison is the base model itself (validation loss, perplexity) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="poet", choices=["educator", "poet", "theme"])
    parser.add_argument("--profile", default="cpu_small")
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    os.environ["DISTILLERY_DATA_DIR"] = args.data_dir or tempfile.mkdtemp(prefix="distillery-bench-")

    from distillery_assets.paths import config_dir, data_dir
    from distillery_assets.training.base_model import build_embedded_base, embedded_base_dir
    from distillery_assets.training.config import load_train_config
    from distillery_assets.training.demo_data import SYSTEM, write_demo_chatml
    from distillery_assets.training.steps import ExportGGUFSpec, TrainLoraSpec

    root = data_dir()
    cfg = load_train_config(config_dir() / "training" / f"{args.role}.yaml", args.profile)
    write_demo_chatml(root / "demo")
    stages: list[tuple[str, float]] = []

    t = time.perf_counter()
    base = build_embedded_base(embedded_base_dir(root))
    stages.append(("base checkpoint (GGUF -> fp32 safetensors)" + (" [reused]" if base["reused"] else ""),
                   time.perf_counter() - t))

    t = time.perf_counter()
    train = TrainLoraSpec(config=cfg, train="demo/train.jsonl", val="demo/val.jsonl",
                          adapter_dir=f"models/lora/{args.role}").run(root)
    stages.append((f"LoRA training ({train.steps} steps, incl. 2+ val passes)", time.perf_counter() - t))

    t = time.perf_counter()
    export = ExportGGUFSpec(
        config=cfg, adapter_dir=f"models/lora/{args.role}", val="demo/val.jsonl", out_dir=f"models/gguf/{args.role}",
        chat_messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about nettle."}],
    ).run(root)
    total_export = time.perf_counter() - t
    for name, seconds in export.timings.items():
        stages.append((f"  export: {name.removesuffix('_s')}", seconds))
    stages.append(("export total", total_export))

    print(f"\nrole {args.role}, profile {cfg.profile}, data {root}")
    print(f"{'stage':<55} {'seconds':>8}")
    for name, seconds in stages:
        print(f"{name:<55} {seconds:8.1f}")
    print(f"\nvalidation loss: base {train.base_val_loss:.4f} -> trained {train.val_loss:.4f} "
          f"(ratio {train.val_loss / train.base_val_loss:.3f})")
    for e in train.epochs:
        print(f"  epoch {e.epoch}: train {e.train_loss:.4f} val {e.val_loss:.4f}")
    print(f"training throughput: {train.tokens_per_s:.0f} tokens/s")
    print(f"perplexity: merged {export.ppl_merged:.4f}, f16 GGUF {export.ppl_intermediate_gguf or float('nan'):.4f}, "
          f"{export.quant} {export.ppl_gguf:.4f} ({100 * export.ppl_degradation:+.2f}% vs merged)")
    print(f"file: {export.gguf_file} {export.gguf_bytes / 1e6:.1f} MB (f16 {export.intermediate_bytes / 1e6:.1f} MB), "
          f"declared {export.gguf.file_type}, tensors {json.dumps(export.gguf.tensor_types)}")
    chat = export.chat
    print(f"chat: finish_reason={chat.finish_reason} tokens={chat.completion_tokens} reply={chat.reply!r}")

if __name__ == "__main__":
    main()
