"""Dagster concurrency pools shared across pipelines (limits in dagster.yaml)."""

# Steps that load a model into this process's memory: the local llama.cpp LLM, CPU training, GGUF export.
LOCAL_MODEL_POOL = "local_model"
