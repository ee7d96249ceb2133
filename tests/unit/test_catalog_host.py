"""The DuckDB catalogue stays on its host (resources/catalog.py): a process on another host that opens it, or a
run on another host against an instance whose catalogue is elsewhere, fails naming both hosts."""

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from distillery_assets.paths import repo_root
from resources.catalog import (INSTANCE_KEY, CatalogHostError, CatalogResource, check_instance_host, claim,
                               host_file, this_host)


def _foreign(path, host="orchestrator-a"):
    path.write_text(json.dumps({"host": host, "catalog": "/srv/distillery/data/catalog.duckdb",
                                "recorded_at": "2026-01-01T00:00:00+00:00"}) + "\n")


def test_first_open_records_this_host_and_the_catalogue_works(data_dir):
    cat = CatalogResource().get()
    record = json.loads((data_dir / "catalog.host").read_text())
    assert record["host"] == this_host() and record["catalog"] == str((data_dir / "catalog.duckdb").resolve())
    cat.record_run(kind="train", name="x", run_id="r1", params={}, metrics={})
    assert CatalogResource().get().query("SELECT count(*) AS n FROM runs")[0]["n"] == 1


def test_catalogue_of_another_host_is_refused_before_it_is_touched(data_dir):
    _foreign(host_file(data_dir / "catalog.duckdb"))
    with pytest.raises(CatalogHostError) as err:
        CatalogResource().get()
    message = str(err.value)
    assert "'orchestrator-a'" in message and repr(this_host()) in message and "catalog.host" in message
    assert "--claim" in message
    assert not (data_dir / "catalog.duckdb").exists()


def test_unreadable_marker_is_a_named_error(data_dir):
    (data_dir / "catalog.host").write_text("not json")
    with pytest.raises(CatalogHostError, match="catalog.host: not a catalogue host record"):
        CatalogResource().get()


def test_claim_moves_the_catalogue_to_this_host(data_dir):
    _foreign(host_file(data_dir / "catalog.duckdb"))
    with dg.instance_for_test() as instance:
        instance.run_storage.set_cursor_values({INSTANCE_KEY: (data_dir / "catalog.host").read_text()})
        lines = claim(data_dir / "catalog.duckdb", instance)
        assert len(lines) == 2
        check_instance_host(instance, data_dir / "catalog.duckdb")  # no error now
        stored = json.loads(instance.run_storage.get_cursor_values({INSTANCE_KEY})[INSTANCE_KEY])
        assert stored["host"] == this_host()
    CatalogResource().get()


@dg.asset
def _uses_catalogue(catalog: CatalogResource) -> None:
    catalog.get().record_run(kind="train", name="guarded", run_id="r", params={}, metrics={})


def test_a_run_records_its_host_in_the_instance_and_a_run_elsewhere_fails(data_dir, tmp_path, monkeypatch):
    with dg.instance_for_test() as instance:
        assert dg.materialize([_uses_catalogue], instance=instance, resources={"catalog": CatalogResource()}).success
        stored = json.loads(instance.run_storage.get_cursor_values({INSTANCE_KEY})[INSTANCE_KEY])
        assert stored["host"] == this_host()
        # the instance's catalogue is on another host; this "host" has a data folder of its own (no marker)
        _foreign(tmp_path / "marker")
        instance.run_storage.set_cursor_values({INSTANCE_KEY: (tmp_path / "marker").read_text()})
        other = tmp_path / "laptop-data"
        other.mkdir()
        monkeypatch.setenv("DISTILLERY_DATA_DIR", str(other))
        result = dg.materialize([_uses_catalogue], instance=instance, resources={"catalog": CatalogResource()},
                                raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        text = failure.step_failure_data.error.to_string()
        assert "CatalogHostError" in text and "'orchestrator-a'" in text and repr(this_host()) in text
        assert not (other / "catalog.duckdb").exists()


def test_ephemeral_instance_is_not_asked(data_dir):
    assert dg.materialize([_uses_catalogue], resources={"catalog": CatalogResource()}).success


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare --uts` (root or user namespaces) for a second hostname")
def test_a_process_with_another_hostname_is_refused(data_dir):
    """A real second host name (a UTS namespace), against a catalogue this host created."""
    CatalogResource().get()
    script = ("import sys; from resources.catalog import CatalogResource\n"
              "try:\n    CatalogResource().get()\nexcept Exception as exc:\n    print(exc); sys.exit(3)\n")
    proc = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname other-host && exec "$0" -c "$1"',
                           sys.executable, script], cwd=repo_root(), env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "'other-host'" in proc.stdout and repr(this_host()) in proc.stdout
