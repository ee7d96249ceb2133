"""Step processes start from a forkserver unless the run config names a start method (assets/dead_runs.py).

The forkserver forks every step from a process that has imported the code location once; that is only safe
while importing it starts no thread and loads neither torch nor llama.cpp (their thread pools and native
state must not be inherited through fork), which the last test checks in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

from assets.dead_runs import FORKSERVER, with_default_start_method
from distillery_assets.paths import repo_root


def test_multiprocess_without_start_method_gets_the_forkserver():
    assert with_default_start_method({"multiprocess": {}}) == {"multiprocess": {"start_method": FORKSERVER}}
    got = with_default_start_method({"multiprocess": {"max_concurrent": 3, "retries": {"enabled": {}}}})
    assert got["multiprocess"] == {"max_concurrent": 3, "retries": {"enabled": {}}, "start_method": FORKSERVER}


def test_a_start_method_in_the_run_config_is_kept():
    spawn = {"multiprocess": {"start_method": {"spawn": {}}}}
    assert with_default_start_method(spawn) == spawn
    named = {"multiprocess": {"start_method": {"forkserver": {"preload_modules": ["dagster"]}}}}
    assert with_default_start_method(named) == named


def test_in_process_runs_are_left_alone():
    assert with_default_start_method({"in_process": {}}) == {"in_process": {}}


def test_the_config_given_is_not_changed_in_place():
    given = {"multiprocess": {"max_concurrent": 2}}
    with_default_start_method(given)
    assert given == {"multiprocess": {"max_concurrent": 2}}


def test_importing_the_code_location_starts_no_thread_and_loads_no_native_runtime():
    code = ("import sys, threading, distillery_assets.definitions, json; "
            "print(json.dumps({'threads': threading.active_count(), "
            "'loaded': [m for m in ('torch', 'llama_cpp', 'transformers') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"threads": 1, "loaded": []}, got
