"""Dagster concurrency pools shared across pipelines (limits in dagster.yaml).

``local_model`` (limit 1) holds only the steps that load a model into this process's memory: the local
llama.cpp LLM, CPU/GPU training and GGUF export on this machine, the tutor sessions on the exported GGUFs.
A step that sends its work elsewhere (a remote LLM API, Modal) takes no slot, so corpus runs against an
OpenAI-compatible server run side by side.

Dagster fixes ``pool=`` on the asset definition, so the choice is made when the definitions load, from the
same environment the resources are built from (``resources.build_resources``):

* ``llm_pool()``: ``local_model`` when ``DISTILLERY_LLM_PROVIDER`` is ``local`` (the default), else none;
* ``compute_pool()``: ``local_model`` when ``DISTILLERY_COMPUTE_BACKEND`` is ``local`` (the default), else none.

Changing either variable takes effect in the next process that loads the code location: the next
``dagster asset materialize``, or ``dagster dev`` started again (its "Reload" keeps the old environment). A resource overridden in the launchpad's run
config does not move the step in or out of the pool.
"""

from __future__ import annotations

from distillery_assets.llm import LLMSettings

# Steps that load a model into this process's memory.
LOCAL_MODEL_POOL = "local_model"


def llm_pool() -> str | None:
    """The pool of a step that calls the LLM resource: the model is in process only for provider ``local``."""
    return LOCAL_MODEL_POOL if LLMSettings.from_env().provider == "local" else None


def compute_pool() -> str | None:
    """The pool of a training/export step: only the ``local`` compute backend runs it in this process."""
    from resources.compute import ComputeResource

    return LOCAL_MODEL_POOL if ComputeResource.from_env().backend == "local" else None
