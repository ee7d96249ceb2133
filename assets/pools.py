"""Dagster concurrency pools shared across pipelines (limits in dagster.yaml).

``local_model`` (limit 1) holds every step that loads a model into its own process's memory, and only those,
so a run never holds several copies: the local llama.cpp LLM, CPU/GPU training and GGUF export on this
machine, a filter's scorer, thyme's evaluation and GGUF check, the tutor sessions on the exported GGUFs.
A step that sends its work elsewhere (a remote LLM API, Modal) takes no slot, so corpus runs against an
OpenAI-compatible server run side by side.

Each such asset says where its model loads, ``pool=model_pool(Loads.X)``:

* ``Loads.ALWAYS``: in the step's own process whatever the settings (a scorer, llama.cpp on a GGUF, a torch
  model read back for evaluation or export): always ``local_model``;
* ``Loads.LLM``: through the LLM resource: ``local_model`` when ``DISTILLERY_LLM_PROVIDER`` is ``local`` (the
  default), else none;
* ``Loads.COMPUTE``: through the compute resource (``run_step``, the filters' shard runner): ``local_model``
  when ``DISTILLERY_COMPUTE_BACKEND`` is ``local`` (the default), else none.

``tests/unit/test_pools.py`` follows every asset's code to the model loads it reaches and fails when one has
no ``local_model`` slot under some setting.

Dagster fixes ``pool=`` on the asset definition, so the choice is made when the definitions load, from the
same environment the resources are built from (``distillery_assets.definitions.build_resources``). Changing either
variable takes effect in the next process that loads the code location: the next ``dagster asset materialize``, or
``dagster dev`` started again (its "Reload" keeps the old environment). A resource overridden in the
launchpad's run config does not move the step in or out of the pool.
"""

from __future__ import annotations

from enum import Enum

from distillery_assets.llm import LLMSettings

LOCAL_MODEL_POOL = "local_model"
"""The pool of the steps that load a model into this process's memory."""


class Loads(Enum):
    """Where a step's model is loaded, which decides its pool (see :func:`model_pool`)."""

    ALWAYS = "always"
    LLM = "llm"
    COMPUTE = "compute"


def model_pool(loads: Loads) -> str | None:
    """The pool of a step whose model loads as ``loads`` says, under the settings the definitions load with."""
    if loads is Loads.LLM:
        in_process = LLMSettings.from_env().provider == "local"
    elif loads is Loads.COMPUTE:
        from resources.compute import ComputeResource

        in_process = ComputeResource.from_env().backend == "local"
    else:
        in_process = True
    return LOCAL_MODEL_POOL if in_process else None

