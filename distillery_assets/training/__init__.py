"""Training and export, shared by the poetry (educator, poet) and theme pipelines. No Dagster here.

Shared by any training (fine-tune or from scratch):
config.py      LoopConfig (what every loop reads) and TrainConfig (a fine-tune: + base, LoRA, 4-bit, export);
               profiles from data/config/training/<role>.yaml
loop.py        seeding, batching, token loss, optimizer/schedule (the filter trainer's too), the step loop,
               history file, checkpoints with the step counter and resume, progress logging
chat_data.py   ChatML JSONL -> token ids, labels only on assistant turns, truncation + rejects
steps.py       the fine-tunes' step specs (TrainLoraSpec, ExportGGUFSpec) on ``distillery_assets.steps``;
               run by the compute resource (local | Modal)
results.py     typed step results (TrainResult, ExportResult), JSON round-trippable

Fine-tuning:
base_model.py  the float32 SmolLM2 checkpoint built once from the bundled GGUF; Hub ids for real runs
lora.py        LoRA / QLoRA on the shared loop
export.py      merge -> GGUF f16 -> quantized GGUF, perplexity and chat checks
gguf_tools.py  converter / quantizer in child processes, GGUF header inspection
perplexity.py  the same assistant-token perplexity for torch models and GGUF files
report.py      loss table, loss plot, model card
demo_data.py   a tiny learnable ChatML set for tests and the benchmark
"""
