"""Which steps take the ``local_model`` pool slot: only those that load a model into this process, and every one
of them, whatever the compute backend and the LLM provider.

What "loads a model in process" means is read from the code, not from a list kept here: each asset's function
is followed through the functions and classes of the library it calls (:func:`loads_in_process`) to a model
load (``from_pretrained`` of a model, ``llama_cpp.Llama``, a GGUF's tensors, a ``load_state_dict``); an asset
that does so must take ``local_model`` under every setting. An asset with the ``llm`` resource takes it when
the provider is ``local``, one with the ``compute`` resource when the backend is ``local``; any other takes
none. The pools are those of the definitions as a fresh process loads them under each setting."""

from __future__ import annotations

import builtins
import dis
import functools
import importlib
import inspect
import json
import os
import subprocess
import sys
import types

import pytest

from assets import pools
from assets.pools import LOCAL_MODEL_POOL, Loads, model_pool
from distillery_assets.paths import repo_root
from distillery_assets.steps import StepSpec

LLM_STEPS = ["encyclopedia_corpus", "story_corpus", "theme_chatml", "poetry_bad_poems", "poetry_critiques",
             "poetry_briefs", "poetry_comparisons", "poetry_autopsies", "poetry_dialogues", "poetry_lessons",
             "poetry_poet_pairs", "filter_ground_truth", "filter_oracle_agreement"]
COMPUTE_STEPS = ["poet_lora", "poet_gguf", "educator_lora", "educator_gguf", "theme_lora", "theme_gguf", "thyme_model",
                 "filter_model", "filter_scores"]
IN_PROCESS_ALWAYS = ["base_model", "poetry_sample_sessions", "thyme_eval", "thyme_gguf", "filter_report"]

SETTINGS = [("local", "local"), ("openai", "modal"), ("anthropic", "local"), ("local", "modal")]

_PRINT_POOLS = (
    "import json; from distillery_assets.definitions import defs; "
    "g = defs.get_repository_def().asset_graph; "
    "print(json.dumps({k.to_user_string(): sorted(g.get(k).pools or []) for k in g.get_all_asset_keys() "
    "if g.get(k).is_executable}))"
)


@functools.cache
def _definition_pools(provider: str, backend: str) -> dict[str, list[str]]:
    """The pools of every asset of the code location as a fresh process loads it with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_LLM_")}
    env.update(DISTILLERY_LLM_PROVIDER=provider, DISTILLERY_COMPUTE_BACKEND=backend)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PRINT_POOLS], env=env, cwd=repo_root(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("provider,backend", SETTINGS[:3])
def test_pools_follow_the_settings_the_definitions_load_with(provider, backend):
    seen = _definition_pools(provider, backend)
    llm = [LOCAL_MODEL_POOL] if provider == "local" else []
    compute = [LOCAL_MODEL_POOL] if backend == "local" else []
    named = {**{k: llm for k in LLM_STEPS}, **{k: compute for k in COMPUTE_STEPS},
             **{k: [LOCAL_MODEL_POOL] for k in IN_PROCESS_ALWAYS}}
    assert {k: seen[k] for k in named} == named


def test_pool_functions(monkeypatch):
    monkeypatch.delenv("DISTILLERY_LLM_PROVIDER", raising=False)
    monkeypatch.delenv("DISTILLERY_COMPUTE_BACKEND", raising=False)
    # the offline defaults run in process
    assert model_pool(Loads.LLM) == model_pool(Loads.COMPUTE) == model_pool(Loads.ALWAYS) == LOCAL_MODEL_POOL
    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "fal")
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "modal")
    assert model_pool(Loads.LLM) is None and model_pool(Loads.COMPUTE) is None
    assert model_pool(Loads.ALWAYS) == LOCAL_MODEL_POOL  # a step that loads its model itself, wherever compute is
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "gpu-farm")
    with pytest.raises(ValueError, match="DISTILLERY_COMPUTE_BACKEND"):
        pools.model_pool(Loads.COMPUTE)


# ------------------------------------------------------------------------------ where models load, from the code

MODEL_LOADS = {"from_pretrained", "Llama", "GGUFReader", "load_state_dict"}
"""Names whose use loads a model's weights into the calling process (``from_pretrained`` of a tokenizer class
does not count)."""

LIBRARY = ("distillery_assets.", "assets.")
NOT_FOLLOWED = ("distillery_assets.llm.",)
"""The LLM client loads its model in process only for provider ``local``: that is the ``llm`` resource's rule."""


def _tokenizer_only() -> set:
    """Library functions that open a model file for its tokenizer alone (checked to still say so)."""
    from distillery_assets.datasets.chatml import gguf_token_counter

    assert "vocab_only=True" in inspect.getsource(gguf_token_counter)
    return {gguf_token_counter}


def _followed(obj) -> list[types.FunctionType]:
    """The library functions behind ``obj`` (a function, or a class's methods and properties); a step spec's
    ``run`` is not followed: the compute resource places it (the ``compute`` resource's rule)."""
    module = getattr(obj, "__module__", None) or ""
    if not module.startswith(LIBRARY) or module.startswith(NOT_FOLLOWED) or obj in _tokenizer_only():
        return []
    if isinstance(obj, types.FunctionType):
        return [inspect.unwrap(obj)]
    if isinstance(obj, type) and not issubclass(obj, StepSpec):
        found = []
        for value in vars(obj).values():
            value = getattr(value, "__func__", None) or getattr(value, "fget", None) or getattr(value, "func", None) or value
            if isinstance(value, types.FunctionType):
                found.append(value)
        return found
    return []


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def loads_in_process(fn: types.FunctionType, seen: set | None = None) -> list[str]:
    """The call path from ``fn`` to a model load in its own process (empty: none found)."""
    seen = set() if seen is None else seen
    if fn in seen:
        return []
    seen.add(fn)
    for code in _codes(fn.__code__):
        last = module = None
        for ins in dis.get_instructions(code):
            op, name, obj = ins.opname, ins.argval, None
            if op in ("LOAD_GLOBAL", "LOAD_NAME"):
                obj = fn.__globals__.get(name, getattr(builtins, name, None))
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                obj = getattr(last, name, None) if last is not None else None
            elif op == "IMPORT_NAME":
                obj = module = importlib.import_module(name)
            elif op == "IMPORT_FROM" and module is not None:
                obj = getattr(module, name, None)
            if name in MODEL_LOADS and op in ("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM"):
                if not (name == "from_pretrained" and "Tokenizer" in getattr(last, "__name__", "")):
                    return [f"{fn.__module__}.{fn.__qualname__}: {name}"]
            for callee in _followed(obj):
                path = loads_in_process(callee, seen)
                if path:
                    return [f"{fn.__module__}.{fn.__qualname__}", *path]
            last = obj
    return []


@functools.cache
def _steps() -> dict[str, tuple[list[str], frozenset[str]]]:
    """Every executable asset: (the path to its in-process model load, or [], its resource keys)."""
    from distillery_assets.definitions import defs

    steps = {}
    for assets_def in defs.get_repository_def().assets_defs_by_key.values():
        if not assets_def.is_executable:
            continue
        found = loads_in_process(assets_def.op.compute_fn.decorated_fn)
        for key in assets_def.keys:
            steps[key.to_user_string()] = (found, frozenset(assets_def.required_resource_keys))
    return steps


def test_the_scan_finds_the_known_in_process_loads():
    steps = _steps()
    for name in ("poetry_sample_sessions", "base_model", "thyme_eval", "thyme_gguf", "filter_report"):
        assert steps[name][0], f"{name}: no model load found; the scan has gone blind"
    for name in ("educator_train", "thyme_upload", "filter_upload", "theme_model_benchmark"):
        assert not steps[name][0], steps[name][0]


@pytest.mark.parametrize("provider,backend", SETTINGS)
def test_every_step_that_loads_a_model_in_process_takes_local_model(provider, backend):
    seen = _definition_pools(provider, backend)
    wrong = []
    for name, (path, resources) in sorted(_steps().items()):
        in_process = (bool(path) or ("llm" in resources and provider == "local")
                      or ("compute" in resources and backend == "local"))
        expected = [LOCAL_MODEL_POOL] if in_process else []
        if seen[name] != expected:
            why = " -> ".join(path) if path else f"resources {sorted(resources & {'llm', 'compute'})}"
            wrong.append(f"{name}: pool {seen[name]}, expected {expected} ({why})")
    assert not wrong, f"provider={provider} backend={backend}:\n" + "\n".join(wrong)
