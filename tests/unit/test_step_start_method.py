"""A run's step processes (assets/dead_runs.py): started from a forkserver unless the run config names a start
method, and as many at once as the model slots plus two light steps unless it names ``max_concurrent``.

The forkserver forks every step from a process that has imported the code location once; that is only safe
while importing it starts no thread and loads neither torch nor llama.cpp (their thread pools and native
state must not be inherited through fork), which the last test checks in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

from assets.dead_runs import FORKSERVER, LIGHT_STEPS, PRELOAD, default_max_concurrent, with_run_defaults
from distillery_assets.threads import model_slots
from distillery_assets.paths import repo_root


def test_multiprocess_without_start_method_or_limit_gets_the_defaults():
    assert with_run_defaults({"multiprocess": {}}, max_concurrent=4) == {
        "multiprocess": {"start_method": FORKSERVER, "max_concurrent": 4}}
    got = with_run_defaults({"multiprocess": {"max_concurrent": 3, "retries": {"enabled": {}}}})
    assert got["multiprocess"] == {"max_concurrent": 3, "retries": {"enabled": {}}, "start_method": FORKSERVER}


def test_the_default_limit_leaves_room_for_light_steps_beside_every_model_slot():
    assert default_max_concurrent() == model_slots() + LIGHT_STEPS
    assert with_run_defaults({"multiprocess": {"max_concurrent": None}})["multiprocess"]["max_concurrent"] \
        == model_slots() + LIGHT_STEPS


def test_what_the_run_config_names_is_kept():
    spawn = {"multiprocess": {"start_method": {"spawn": {}}, "max_concurrent": 1}}
    assert with_run_defaults(spawn) == spawn
    named = {"multiprocess": {"start_method": {"forkserver": {"preload_modules": ["dagster"]}}, "max_concurrent": 9}}
    assert with_run_defaults(named) == named


def test_in_process_runs_are_left_alone():
    assert with_run_defaults({"in_process": {}}) == {"in_process": {}}


def test_the_config_given_is_not_changed_in_place():
    given = {"multiprocess": {"retries": {"enabled": {}}}}
    with_run_defaults(given)
    assert given == {"multiprocess": {"retries": {"enabled": {}}}}


def test_the_forkserver_preloads_the_code_location():
    """Dagster preloads the job's module only for a module code pointer, which the CLI's ``-m`` is not: without
    the explicit list every forked step imported the code location again."""
    preload = FORKSERVER["forkserver"]["preload_modules"]
    assert preload[0] == "dagster._core.executor.multiprocess" and "distillery_assets.definitions" in preload
    assert with_run_defaults({"multiprocess": {}})["multiprocess"]["start_method"]["forkserver"]["preload_modules"] \
        == preload


def test_importing_the_code_location_starts_no_thread_and_loads_no_native_runtime():
    code = ("import sys, threading, importlib, json; "
            f"[importlib.import_module(m) for m in {list(PRELOAD)!r}]; "
            "print(json.dumps({'threads': threading.active_count(), "
            "'loaded': [m for m in ('torch', 'llama_cpp', 'transformers') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"threads": 1, "loaded": []}, got
