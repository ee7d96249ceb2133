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


# ---- a core nobody uses (SpareCores) ---------------------------------------------------------------------

def test_a_step_takes_each_core_the_rest_of_the_machine_leaves_free():
    assert T.spare_threads(1, 2, 0.0) == 2
    assert T.spare_threads(1, 2, 0.25) == 2  # the run's coordinator and daemons: a few percent of a core
    assert T.spare_threads(1, 2, 0.35) == 1  # a core counts as free when at least 70% of it is idle
    assert T.spare_threads(1, 2, 1.0) == 1  # one busy process beside it
    assert T.spare_threads(1, 2, 5.0) == 1  # never below the share
    assert T.spare_threads(2, 8, 3.5) == 4  # 8 cores, 3.5 used by others: its 2 plus 2 free ones
    assert T.spare_threads(2, 8, 0.0) == 8  # never above the cores


def test_the_meter_counts_the_others_not_this_process():
    clock, busy, own = iter([0.0, 2.0, 4.0, 4.1]), iter([100.0, 103.0, 104.0, 104.0]), iter([0.0, 2.0, 3.0, 3.0])
    meter = T.CoreMeter(busy=lambda: next(busy), own=lambda: next(own), clock=lambda: next(clock))
    assert meter.others() == pytest.approx(0.5)  # 3 busy seconds in 2 s, 2 of them ours
    assert meter.others() == pytest.approx(0.0)  # all the busy time was ours
    assert meter.others() is None  # under 0.2 s: no reading


def test_proc_stat_busy_time_is_the_cpus_this_process_may_use():
    stat = ("cpu  900 0 100 5000 10 0 0 0 0 0\n"
            "cpu0 400 0 50 2500 5 0 0 0 0 0\n"
            "cpu1 500 0 50 2500 5 0 0 0 0 0\n"
            "intr 123\n")
    hz = T.os.sysconf("SC_CLK_TCK")
    assert T._busy_seconds({0, 1}, stat) == pytest.approx(1000 / hz)
    assert T._busy_seconds({1}, stat) == pytest.approx(550 / hz)
    assert T._busy_seconds({0}, "") is None


class _Meter:
    def __init__(self, readings):
        self.readings = list(readings)

    def others(self):
        return self.readings.pop(0)


def test_spare_cores_rechecks_once_per_interval_and_says_where_the_time_went():
    now = [0.0]
    spare = T.SpareCores(1, 2, meter=_Meter([0.05, 0.05, 1.0]), interval=2.0, clock=lambda: now[0])
    assert spare.check() == (1, False)  # the first decision comes after half a second
    now[0] = 0.5
    assert spare.check() == (2, True)  # nobody else: the second core
    now[0] = 1.5
    assert spare.check() == (2, False)  # not re-measured within the interval
    now[0] = 2.5
    assert spare.check() == (2, False)
    now[0] = 4.5
    assert spare.check() == (1, True)  # something started beside it: back to the share
    now[0] = 5.0
    assert spare.summary() == {"adaptive": True, "why_fixed": None, "share": 1,
                               "thread_seconds": {"1": 1.0, "2": 4.0}, "changes": 2}


def test_spare_cores_measure_at_once_before_the_first_reading_when_asked():
    """The tutor's first turn comes right after the models load: asked with now_if_unmeasured, the first
    reading is taken then instead of half a second later; later readings keep their interval."""
    now = [0.0]
    spare = T.SpareCores(1, 2, meter=_Meter([0.05, 1.0]), interval=2.0, clock=lambda: now[0])
    now[0] = 0.3
    assert spare.check() == (1, False)  # not due yet
    assert spare.check(now_if_unmeasured=True) == (2, True)
    now[0] = 0.4
    assert spare.check(now_if_unmeasured=True) == (2, False)  # measured once: the interval holds again
    now[0] = 2.4
    assert spare.check(now_if_unmeasured=True) == (1, True)


def test_spare_cores_stay_fixed_where_a_count_was_chosen(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.delenv(T.ENV_ADAPT, raising=False)
    meter = _Meter([0.0] * 10)
    assert not T.spare_cores(cores=2, meter=meter, environ={}).fixed
    cases = {"an explicit thread count": T.spare_cores(3, environ={}, cores=2, meter=meter),
             T.ENV_THREADS: T.spare_cores(environ={T.ENV_THREADS: "2"}, cores=2, meter=meter),
             T.ENV_THREADS_BATCH: T.spare_cores(environ={T.ENV_THREADS_BATCH: "2"}, cores=2, meter=meter),
             f"{T.ENV_ADAPT}=0": T.spare_cores(environ={T.ENV_ADAPT: "0"}, cores=2, meter=meter),
             "the share is every core": T.spare_cores(environ={}, cores=1, meter=meter)}
    for why, spare in cases.items():
        spare._due = 0.0
        assert spare.fixed and spare.why == why and spare.check() == (spare.share, False), why


def test_the_meter_sees_a_busy_process_beside_it():
    import subprocess
    import sys
    import time

    if T._busy_seconds(None) is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"],
                            start_new_session=True)  # its own session: scheduled like another program
    try:
        time.sleep(0.5)
        meter = T.CoreMeter()
        time.sleep(1.5)
        assert meter.others() >= 0.6  # the loop holds most of a core whatever else runs
    finally:
        busy.kill()
        busy.wait()


def test_the_training_loop_takes_a_free_core_and_gives_it_back(monkeypatch):
    """Through the loop itself: torch's threads follow the meter, and the epoch record says so."""
    import torch

    from tests.unit.test_training_loop import _cfg, _examples, _fresh_model
    from distillery_assets.training.loop import train_loop

    _clean(monkeypatch)
    monkeypatch.delenv(T.ENV_ADAPT, raising=False)
    monkeypatch.setattr(T, "available_cores", lambda *a, **k: 2)
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda *a, **k: None)
    monkeypatch.setattr(T, "ADAPT_INTERVAL_S", 0.0)
    readings = iter([0.0] * 6 + [1.0] * 100)
    monkeypatch.setattr(T, "CoreMeter", lambda: _Meter(readings))
    seen = []
    monkeypatch.setattr(T, "apply_torch_threads", lambda n=None: seen.append(n) or n)
    before = torch.get_num_threads()
    try:
        run = train_loop(_fresh_model(), _examples(16, 1), _examples(8, 2), _cfg(epochs=3), device="cpu", pad_id=0,
                         progress=None)
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1]  # a free core, then back to the share when the others came
    record = run.history.epochs[-1]["threads"]
    assert record["adaptive"] and record["changes"] == 2 and set(record["thread_seconds"]) == {"1", "2"}
    fixed = train_loop(_fresh_model(), _examples(8, 1), _examples(4, 2), _cfg(epochs=1, threads=1), device="cpu",
                       pad_id=0, progress=None)
    assert fixed.history.epochs[-1]["threads"]["why_fixed"] == "an explicit thread count"


def test_a_training_step_is_the_same_with_one_thread_or_two():
    """What makes taking a core safe: torch's CPU kernels split work by output rows here, so the loss of a
    small Llama step (fp32 and bf16 autocast) does not depend on the thread count; only the time does."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def losses(threads: int, autocast: bool) -> list[float]:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=128, intermediate_size=384,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        out = []
        for _ in range(2):
            ids = torch.randint(0, 500, (4, 64), generator=gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        return out

    before = torch.get_num_threads()
    try:
        for autocast in (False, True):
            assert losses(1, autocast) == losses(2, autocast), f"autocast={autocast}"
    finally:
        torch.set_num_threads(before)


def test_a_loaded_model_takes_the_prompt_threads_of_each_request_and_its_logits_do_not_change():
    """The provider and the tutor re-point a loaded llama.cpp context per request (set_llama_threads);
    decode keeps one thread fewer; the prompt's logits are the same bits with one prompt thread or two."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama

    from distillery_assets.embedded import smollm2_gguf_path

    llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=256, n_threads=1, n_threads_batch=1, logits_all=True,
                verbose=False)
    try:
        ids = llm.tokenize(b"The moon over the harbour, and a boat with one lamp lit.")
        logits = {}
        for n in (2, 1):
            T.set_llama_threads(llm, n)
            assert (llm.n_threads, llm.n_threads_batch) == T.llama_batch_decode(n) == (1, n)
            llm.reset()
            llm.eval(ids)
            logits[n] = np.array(llm.scores[: len(ids)])
        assert np.array_equal(logits[1], logits[2])
    finally:
        llm.close()


def test_the_provider_and_the_tutor_set_each_requests_threads(monkeypatch, tmp_path):
    from distillery_assets.llm.providers import local

    _clean(monkeypatch)
    monkeypatch.delenv(T.ENV_ADAPT, raising=False)
    monkeypatch.setattr(T, "available_cores", lambda *a, **k: 2)
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda *a, **k: None)
    calls = []

    class FakeLlama:
        def create_chat_completion(self, **kw):
            return {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}

    monkeypatch.setattr(local, "_MODELS", {})
    monkeypatch.setattr(local, "_load_model", lambda *a: FakeLlama())
    monkeypatch.setattr(T, "set_llama_threads", lambda llm, n: calls.append(n))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    provider = local.LocalProvider(gguf, n_ctx=512)
    assert not provider.spare.fixed
    provider.spare = T.SpareCores(1, 2, meter=_Meter([0.0, 1.0]), interval=0.0)
    for _ in range(2):
        provider.call([], model=provider.model_id(None), temperature=0.0, max_tokens=8, json_schema=None, stop=None,
                      seed=0, timeout_s=10)
    assert calls == [2, 1]
    assert local.LocalProvider(gguf, n_threads=1).spare.fixed  # a count given by hand is kept
