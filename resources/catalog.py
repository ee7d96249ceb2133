"""``CatalogResource``: the DuckDB catalogue as a Dagster resource (engine: distillery_assets.catalog), and the
rule that keeps it on one host.

The catalogue is a DuckDB file guarded by ``flock`` locks (its lock file, the spool files of live processes).
Neither is safe across machines: DuckDB does not support one database file opened from several hosts, and a
lock taken on one host says nothing on another (on a network filesystem, at best unreliably). So the
catalogue lives on the orchestrator host, the machine that runs ``dagster-daemon`` and every run of the
instance (the default run launcher starts runs there); work that needs another machine goes to Modal or a
provider's API and comes back to a step on that host, which records its files (docs/scale.md). Runs on
other hosts must not open it, and this resource enforces that in two places:

* the data folder: ``catalog.host`` beside ``catalog.duckdb`` names the host that created it; a process on
  another host that opens that catalogue (the data folder on a shared filesystem) fails;
* the Dagster instance: a team instance (PostgreSQL, deploy/team/dagster.yaml) is reachable from every host,
  so it records the host of its catalogue in its key-value store (key ``distillery/catalog_host``); a run on
  another host against that instance (``dagster asset materialize`` on a laptop with the team's
  ``DAGSTER_HOME``) fails before it writes a file, instead of filling a second catalogue the team never sees.

Both errors name the two hosts and the way out. Moving the orchestrator for good (the data folder copied to
a new machine) is one command on the new host: ``python -m resources.catalog --claim`` (``--show`` prints
both records). The host is ``socket.gethostname()``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from distillery_assets.catalog import Catalog, CatalogError
from distillery_assets.io.atomic import atomic_write_text
from distillery_assets.paths import data_dir

INSTANCE_KEY = "distillery/catalog_host"
"""Key in the Dagster instance's key-value store: the host (and path) of the instance's catalogue."""


class CatalogHostError(CatalogError):
    """The catalogue (or the instance's catalogue) belongs to another host than the one this process runs on."""


def this_host() -> str:
    return socket.gethostname()


def host_file(db_path: Path) -> Path:
    """``data/catalog.duckdb`` -> ``data/catalog.host``."""
    return Path(db_path).with_suffix(".host")


def _record(db_path: Path) -> dict[str, str]:
    return {"host": this_host(), "catalog": str(Path(db_path).resolve()),
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _read_record(text: str, where: str) -> dict[str, str]:
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or not isinstance(record.get("host"), str) or not record["host"]:
            raise ValueError("no 'host' string")
    except ValueError as exc:
        raise CatalogHostError(f"{where}: not a catalogue host record ({exc}); fix or delete it, or run "
                               f"`python -m resources.catalog --claim` on the catalogue's host") from exc
    return record


def _moved(record: dict[str, str], db_path: Path) -> str:
    return (f"Runs execute on the catalogue's host only (the DuckDB file and its locks are not safe across "
            f"machines; docs/scale.md): run this there. If the orchestrator moved to {this_host()!r} for good, "
            f"run `python -m resources.catalog --claim` here once (catalogue {Path(db_path).resolve()}).")


def check_file_host(db_path: Path) -> None:
    """Fail when ``db_path``'s ``catalog.host`` names another host; write it when there is none yet."""
    marker = host_file(db_path)
    if not marker.is_file():
        atomic_write_text(marker, json.dumps(_record(db_path)) + "\n")
        return
    record = _read_record(marker.read_text(), str(marker))
    if record["host"] != this_host():
        raise CatalogHostError(
            f"catalogue {db_path} belongs to host {record['host']!r} (recorded {record.get('recorded_at', '?')} "
            f"in {marker}); this process runs on host {this_host()!r}. " + _moved(record, db_path))


def check_instance_host(instance: dg.DagsterInstance, db_path: Path) -> None:
    """Fail when ``instance`` records its catalogue on another host; record this host when it records none."""
    stored = instance.run_storage.get_cursor_values({INSTANCE_KEY}).get(INSTANCE_KEY)
    if stored is None:
        instance.run_storage.set_cursor_values({INSTANCE_KEY: json.dumps(_record(db_path))})
        return
    record = _read_record(stored, f"the Dagster instance's key {INSTANCE_KEY!r}")
    if record["host"] != this_host():
        raise CatalogHostError(
            f"this Dagster instance keeps its catalogue on host {record['host']!r} ({record.get('catalog', '?')}, "
            f"recorded {record.get('recorded_at', '?')}); this run is on host {this_host()!r}, whose catalogue "
            f"would be a second one the instance's other runs never see. " + _moved(record, db_path))


def claim(db_path: Path, instance: dg.DagsterInstance | None) -> list[str]:
    """Make this host the catalogue's host, in the data folder and (when given) the instance."""
    record = json.dumps(_record(db_path))
    atomic_write_text(host_file(db_path), record + "\n")
    lines = [f"{host_file(db_path)}: host {this_host()}"]
    if instance is not None and not instance.is_ephemeral:
        instance.run_storage.set_cursor_values({INSTANCE_KEY: record})
        lines.append(f"Dagster instance ({type(instance.run_storage).__name__}): catalogue host {this_host()}")
    return lines


class CatalogResource(dg.ConfigurableResource):
    """Where the catalogue lives. ``path=None`` means ``data_dir()/catalog.duckdb``, resolved at call
    time so that ``DISTILLERY_DATA_DIR`` set for a run (or a test) is honoured. Opening it checks that it
    belongs to this host (module docstring); a run also checks its Dagster instance's record."""

    path: str | None = None
    _instance: dg.DagsterInstance | None = PrivateAttr(default=None)
    _checked: set[str] = PrivateAttr(default_factory=set)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        instance = context.instance
        self._instance = instance if instance is not None and not instance.is_ephemeral else None

    def db_path(self) -> Path:
        return Path(self.path) if self.path else data_dir() / "catalog.duckdb"

    def get(self) -> Catalog:
        path = self.db_path()
        key = str(path.resolve())
        if key not in self._checked:
            check_file_host(path)
            if self._instance is not None:
                check_instance_host(self._instance, path)
            self._checked.add(key)
        return Catalog(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resources.catalog",
        description="The host the DuckDB catalogue belongs to: in the data folder (catalog.host) and in the "
                    "Dagster instance at $DAGSTER_HOME.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--show", action="store_true", help="print both records and this host")
    action.add_argument("--claim", action="store_true",
                        help="make this host the catalogue's host (after moving the orchestrator for good)")
    args = parser.parse_args(argv)
    db_path = CatalogResource().db_path()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    try:
        if args.claim:
            print("\n".join(claim(db_path, instance)))
            return 0
        marker = host_file(db_path)
        print(f"this host: {this_host()}")
        print(f"{marker}: {marker.read_text().strip() if marker.is_file() else '(none yet)'}")
        if instance is not None:
            stored = instance.run_storage.get_cursor_values({INSTANCE_KEY}).get(INSTANCE_KEY)
            print(f"Dagster instance at $DAGSTER_HOME: {stored or '(none yet)'}")
        else:
            print("no $DAGSTER_HOME: the instance's record is not shown")
        return 0
    finally:
        if instance is not None:
            instance.dispose()


if __name__ == "__main__":
    sys.exit(main())
