"""Fine-tuning and export, shared by the poetry (educator, poet) and theme pipelines. No Dagster here.

config.py      TrainConfig profiles from data/config/training/<role>.yaml
base_model.py  the float32 SmolLM2 checkpoint built once from the bundled GGUF; Hub ids for real runs
chat_data.py   ChatML JSONL -> token ids, labels only on assistant turns, truncation + rejects
lora.py        LoRA / QLoRA training loop with base and per-epoch validation loss
export.py      merge -> GGUF f16 -> quantized GGUF, perplexity and chat checks
gguf_tools.py  converter / quantizer in child processes, GGUF header inspection
perplexity.py  the same assistant-token perplexity for torch models and GGUF files
report.py      loss table, loss plot, model card
steps.py       STEPS = {"train_lora", "export_gguf"}: fn(spec, root) for the compute resource (local | Modal)
demo_data.py   a tiny learnable ChatML set for tests and the benchmark
"""
