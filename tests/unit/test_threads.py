"""The one thread policy (distillery_assets/threads.py): cores from affinity and cgroup quota, slots from cores and
memory, the override variables, and every llama.cpp / torch thread setting in the code going through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from distillery_assets import threads as T

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
CODE_DIRS = ("distillery_assets", "assets", "resources", "io_managers")


def _clean(monkeypatch) -> None:
    for name in (T.ENV_THREADS, T.ENV_THREADS_BATCH, T.ENV_SLOTS):
        monkeypatch.delenv(name, raising=False)


# ---- what the machine has -----------------------------------------------------------------------------

def test_cores_are_the_affinity_mask_not_the_host_count():
    assert T.available_cores(affinity={0, 1}, quota=None) == 2
    assert T.available_cores(affinity={3}, quota=None) == 1
    assert T.available_cores(affinity={0, 1, 2, 3, 4, 5, 6, 7}, quota=None) == 8


def test_cgroup_quota_caps_the_cores_rounded_up():
    cores = set(range(8))
    assert T.available_cores(affinity=cores, quota=2.0) == 2
    assert T.available_cores(affinity=cores, quota=1.5) == 2
    assert T.available_cores(affinity=cores, quota=0.5) == 1
    assert T.available_cores(affinity={0, 1}, quota=4.0) == 2  # the quota never adds cores


def test_cgroup_v2_cpu_max_and_memory_max(tmp_path):
    group = tmp_path / "job" / "step"
    group.mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (group / "cpu.max").write_text("150000 100000\n")
    (group / "memory.max").write_text(str(4 * GIB))
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    proc = "0::/job/step\n"
    assert T.cgroup_cpu_limit(tmp_path, proc) == 1.5
    assert T.memory_bytes(tmp_path, proc, meminfo=f"MemTotal: {16 * GIB // 1024} kB\n") == 4 * GIB


def test_cgroup_v1_quota_and_limit(tmp_path):
    cpu, mem = tmp_path / "cpu" / "box", tmp_path / "memory" / "box"
    cpu.mkdir(parents=True)
    mem.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # none here ...
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")  # ... but one higher up
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    proc = "4:memory:/box\n2:cpu,cpuacct:/box\n"
    assert T.cgroup_cpu_limit(tmp_path, proc) == 3.0
    assert T.memory_bytes(tmp_path, proc, meminfo="MemTotal: 8388608 kB\n") == 8 * GIB


def test_no_cgroup_no_quota(tmp_path):
    assert T.cgroup_cpu_limit(tmp_path, "0::/\n") is None
    assert T.memory_bytes(tmp_path, "0::/\n", meminfo="") is None


# ---- the policy -----------------------------------------------------------------------------------------

def test_two_cores_two_slots_one_thread_each(monkeypatch):
    _clean(monkeypatch)
    p = T.policy(cores=2, memory=24 * GIB)
    assert (p.slots, p.decode, p.batch, p.torch) == (2, 1, 1, 1)
    assert p.llama_kwargs() == {"n_threads": 1, "n_threads_batch": 1}


def test_memory_limits_the_slots_and_a_bigger_share_keeps_a_core_back(monkeypatch):
    _clean(monkeypatch)
    p = T.policy(cores=8, memory=7 * GIB)  # two slots' worth of memory
    assert p.slots == 2 and p.share == 4
    assert (p.decode, p.batch, p.torch) == (3, 4, 4)
    one = T.policy(cores=2, memory=2 * GIB)  # room for one model: it gets both cores for its prompts
    assert (one.slots, one.decode, one.batch, one.torch) == (1, 1, 2, 2)
    assert T.policy(cores=1, memory=None).llama_kwargs() == {"n_threads": 1, "n_threads_batch": 1}


def test_slots_never_exceed_cores_and_are_at_least_one():
    assert T.slots_for(2, 64 * GIB) == 2
    assert T.slots_for(16, 64 * GIB) == 16
    assert T.slots_for(4, 1 * GIB) == 1
    assert T.slots_for(4, None) == 4


def test_distillery_threads_overrides_every_count(monkeypatch):
    _clean(monkeypatch)
    env = {T.ENV_THREADS: "3"}
    p = T.policy(env, cores=2, memory=24 * GIB)
    assert (p.decode, p.batch, p.torch) == (3, 3, 3)
    assert T.ENV_THREADS in p.source
    p = T.policy({T.ENV_THREADS: "1", T.ENV_THREADS_BATCH: "2"}, cores=2, memory=24 * GIB)
    assert (p.decode, p.batch, p.torch) == (1, 2, 1)
    p = T.policy({T.ENV_SLOTS: "1"}, cores=2, memory=24 * GIB)
    assert (p.slots, p.decode, p.batch, p.torch) == (1, 1, 2, 2)


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_override_is_refused_by_name(raw):
    with pytest.raises(ValueError, match=T.ENV_THREADS):
        T.policy({T.ENV_THREADS: raw}, cores=2, memory=None)


def test_an_explicit_value_wins_for_its_own_use(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv(T.ENV_THREADS, "3")
    assert T.llama_threads() == {"n_threads": 3, "n_threads_batch": 3}
    assert T.llama_threads(2) == {"n_threads": 2, "n_threads_batch": 2}
    assert T.llama_threads(1, 2) == {"n_threads": 1, "n_threads_batch": 2}
    assert T.llama_threads(None, 2) == {"n_threads": 3, "n_threads_batch": 2}
    assert T.torch_threads() == 3 and T.torch_threads(1) == 1


# ---- every use goes through it ----------------------------------------------------------------------------

def _python_files():
    for folder in CODE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called == name:
                yield node


def test_every_llama_construction_takes_the_policys_threads():
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "Llama"):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if any(k.arg == "vocab_only" for k in call.keywords):  # a tokenizer: no weights, no threads
                continue
            found.append(where)
            spread = [k.value for k in call.keywords if k.arg is None]
            named = {k.arg for k in call.keywords}
            via_policy = any(isinstance(v, ast.Call) and getattr(v.func, "id", None) == "llama_threads"
                             for v in spread)
            assert via_policy or {"n_threads", "n_threads_batch"} <= named, \
                f"{where}: Llama(...) without n_threads and n_threads_batch from distillery_assets.threads"
            assert "llama_threads(" in path.read_text(encoding="utf-8"), \
                f"{where}: its threads do not come from distillery_assets.threads.llama_threads"
    # the provider, the export's chat check and perplexity, thyme's GGUF check, the tutor
    assert len(found) >= 5, found


def test_torch_threads_are_set_in_one_place():
    offenders = []
    for path in _python_files():
        if path == ROOT / "distillery_assets" / "threads.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(ROOT)}:{c.lineno}" for c in _calls(tree, "set_num_threads")]
        text = path.read_text(encoding="utf-8")
        assert "os.cpu_count()" not in text or path.name == "threads.py", \
            f"{path.relative_to(ROOT)}: os.cpu_count() counts the host's CPUs; use distillery_assets.threads"
    assert not offenders, f"torch.set_num_threads outside distillery_assets/threads.py: {offenders}"


def test_local_provider_loads_with_the_policys_threads(monkeypatch, tmp_path):
    from distillery_assets.llm.providers import local

    _clean(monkeypatch)
    monkeypatch.setenv(T.ENV_THREADS, "1")
    monkeypatch.setenv(T.ENV_THREADS_BATCH, "2")
    monkeypatch.setattr(local, "_MODELS", {})
    loads = []
    monkeypatch.setattr(local, "_load_model", lambda *a: loads.append(a) or object())
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    provider = local.LocalProvider(gguf, n_ctx=512)
    provider.prepare(provider.model_id(None))
    assert loads == [(str(gguf.resolve()), 512, 1, 2)]
    assert (local.LocalProvider(gguf, n_threads=2).n_threads_batch) == 2  # an explicit n_threads sets both


def test_seed_torch_follows_the_policy(monkeypatch):
    import torch

    from distillery_assets.training.loop import seed_torch

    _clean(monkeypatch)
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(T.ENV_THREADS, "1")
        seed_torch(0)
        assert torch.get_num_threads() == 1
        seed_torch(0, 2)  # a config's explicit threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_tutor_config_pins_no_threads():
    from distillery_assets.poetry.settings import PoetryConfig

    models = PoetryConfig().inference.models
    assert models and all(m.n_threads is None and m.n_threads_batch is None for m in models.values())


# ---- the local_model pool limit -----------------------------------------------------------------------

def test_pool_limit_follows_the_machine_and_keeps_a_limit_set_by_hand(monkeypatch):
    import dagster as dg

    from assets.pools import LOCAL_MODEL_POOL, apply_pool_limit, pool_limit

    _clean(monkeypatch)
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        assert apply_pool_limit(instance, 2) is not None
        assert pool_limit(instance) == (2, False)
        assert apply_pool_limit(instance, 2) is None  # nothing to do
        assert apply_pool_limit(instance, 3) is not None  # ours: follows the machine
        assert pool_limit(instance)[0] == 3
        instance.event_log_storage.set_concurrency_slots(LOCAL_MODEL_POOL, 1)  # by hand
        assert apply_pool_limit(instance, 2) is None
        assert pool_limit(instance)[0] == 1
        monkeypatch.setenv(T.ENV_SLOTS, "2")  # the variable always applies
        assert apply_pool_limit(instance) is not None
        assert pool_limit(instance)[0] == 2


def test_every_run_start_sets_the_limit_and_never_fails_the_run(monkeypatch):
    import dagster as dg

    from assets import dead_runs, pools

    _clean(monkeypatch)
    warnings = []
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(pools, "model_slots", lambda: 2)
        assert "-> 2" in dead_runs._pool_limit_quietly(instance, warnings.append)
        assert pools.pool_limit(instance)[0] == 2

        def broken(_instance):
            raise RuntimeError("storage gone")

        monkeypatch.setattr(pools, "apply_pool_limit", broken)
        assert dead_runs._pool_limit_quietly(instance, warnings.append) is None
        assert warnings and "storage gone" in warnings[0]
