"""Dagster concurrency pools shared across pipelines, and the ``local_model`` pool's limit.

``local_model`` holds every step that loads a model into its own process's memory, and only those, so a run
never holds more copies than the machine has room for: the local llama.cpp LLM, CPU/GPU training and GGUF
export on this machine, a filter's scorer, thyme's evaluation and GGUF check, the tutor sessions on the
exported GGUFs.

Its limit follows from the machine (``distillery_assets.threads.model_slots``: one slot per core the process
may use, as long as each has 3 GiB of memory; ``DISTILLERY_MODEL_SLOTS`` overrides it), and every model step
takes its threads from the same policy (one decode thread, its share of the cores for prompts and torch), so
the slots never oversubscribe the cores. :func:`apply_pool_limit` writes that limit into the instance (what
``dagster instance concurrency set local_model N`` does) at the start of every run, before its first step
claims a slot (``assets/dead_runs.py``'s executor), or by hand with ``python -m assets.pools``. A limit set by
hand (the CLI, the UI) is kept: the instance remembers the limit it wrote last, and only a limit still equal
to it, or dagster.yaml's ``default_limit`` (1, what a fresh instance starts with), is replaced.
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

import argparse
import os
from enum import Enum

from distillery_assets.llm import LLMSettings
from distillery_assets.threads import ENV_SLOTS, model_slots

LOCAL_MODEL_POOL = "local_model"
"""The pool of the steps that load a model into this process's memory."""

AUTO_LIMIT_KEY = "distillery/local_model_limit_set"
"""Key in the instance's key-value store: the ``local_model`` limit :func:`apply_pool_limit` last wrote."""


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



def pool_limit(instance, name: str = LOCAL_MODEL_POOL) -> tuple[int | None, bool]:
    """The pool's limit in the instance (None: none stored yet) and whether it is dagster.yaml's default."""
    for pool in instance.event_log_storage.get_pool_limits():
        if pool.name == name:
            return pool.limit, pool.from_default
    return None, True


def apply_pool_limit(instance, slots: int | None = None) -> str | None:
    """Set the ``local_model`` limit of ``instance`` to this machine's (``slots``, default
    :func:`~distillery_assets.threads.model_slots`), unless it was set by hand; ``DISTILLERY_MODEL_SLOTS``
    is always applied. Returns a line saying what changed, or None when nothing did."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    want = int(slots or model_slots())
    current, from_default = pool_limit(instance)
    if current == want:
        return None
    written = instance.run_storage.get_cursor_values({AUTO_LIMIT_KEY}).get(AUTO_LIMIT_KEY)
    by_hand = current is not None and not from_default and str(current) != written
    if by_hand and not os.environ.get(ENV_SLOTS):
        return None
    storage.set_concurrency_slots(LOCAL_MODEL_POOL, want)
    instance.run_storage.set_cursor_values({AUTO_LIMIT_KEY: str(want)})
    return f"pool {LOCAL_MODEL_POOL}: limit {current if current is not None else 'unset'} -> {want} (this machine)"


def main(argv: list[str] | None = None) -> int:
    import dagster as dg

    from distillery_assets.threads import policy

    parser = argparse.ArgumentParser(prog="python -m assets.pools",
                                     description="Show, or set, the local_model pool limit this machine gets.")
    parser.add_argument("--apply", action="store_true", help="write it into the instance at $DAGSTER_HOME")
    args = parser.parse_args(argv)
    p = policy()
    print(f"this machine: {p.slots} local_model slot(s); per model step: decode {p.decode}, batch {p.batch}, "
          f"torch {p.torch} thread(s) [{p.source}]")
    if not os.environ.get("DAGSTER_HOME"):
        print("no $DAGSTER_HOME: activate the venv (or DAGSTER_HOME=$PWD from the repo root) to see or set the "
              "instance's limit; every run sets it anyway")
        return 2 if args.apply else 0
    with dg.DagsterInstance.get() as instance:
        if args.apply:
            print(apply_pool_limit(instance, p.slots) or "pool limit unchanged")
        current, from_default = pool_limit(instance)
        print(f"instance: local_model limit {current if current is not None else 'not stored yet'}"
              f"{' (dagster.yaml default_limit)' if from_default and current is not None else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
