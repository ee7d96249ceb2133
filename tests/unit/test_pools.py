"""Which steps take the ``local_model`` pool slot: only those that load a model into this process."""

import json
import os
import subprocess
import sys

import pytest

from assets import pools
from assets.pools import LOCAL_MODEL_POOL
from distillery_assets.paths import repo_root

LLM_STEPS = ["encyclopedia_corpus", "story_corpus", "theme_chatml", "poetry_bad_poems", "poetry_critiques",
             "poetry_briefs", "poetry_comparisons", "poetry_autopsies", "poetry_dialogues", "poetry_lessons",
             "poetry_poet_pairs"]
COMPUTE_STEPS = ["poet_lora", "poet_gguf", "educator_lora", "educator_gguf", "theme_lora", "theme_gguf"]
IN_PROCESS_ALWAYS = ["base_model", "poetry_sample_sessions"]

_PRINT_POOLS = (
    "import json, dagster as dg; from distillery_assets.definitions import defs; "
    "g = defs.get_repository_def().asset_graph; "
    f"print(json.dumps({{k: sorted(g.get(dg.AssetKey(k)).pools or []) for k in {LLM_STEPS + COMPUTE_STEPS + IN_PROCESS_ALWAYS!r}}}))"
)


def _definition_pools(provider: str, backend: str) -> dict[str, list[str]]:
    """The pools of the code location as a fresh process loads it with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_LLM_")}
    env.update(DISTILLERY_LLM_PROVIDER=provider, DISTILLERY_COMPUTE_BACKEND=backend)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PRINT_POOLS], env=env, cwd=repo_root(),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("provider,backend", [("local", "local"), ("openai", "modal"), ("anthropic", "local")])
def test_pools_follow_the_settings_the_definitions_load_with(provider, backend):
    seen = _definition_pools(provider, backend)
    llm = [LOCAL_MODEL_POOL] if provider == "local" else []
    compute = [LOCAL_MODEL_POOL] if backend == "local" else []
    assert seen == {**{k: llm for k in LLM_STEPS}, **{k: compute for k in COMPUTE_STEPS},
                    **{k: [LOCAL_MODEL_POOL] for k in IN_PROCESS_ALWAYS}}


def test_pool_functions(monkeypatch):
    monkeypatch.delenv("DISTILLERY_LLM_PROVIDER", raising=False)
    monkeypatch.delenv("DISTILLERY_COMPUTE_BACKEND", raising=False)
    assert pools.llm_pool() == pools.compute_pool() == LOCAL_MODEL_POOL  # the offline defaults run in process
    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "fal")
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "modal")
    assert pools.llm_pool() is None and pools.compute_pool() is None
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "gpu-farm")
    with pytest.raises(ValueError, match="DISTILLERY_COMPUTE_BACKEND"):
        pools.compute_pool()
