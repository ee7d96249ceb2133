"""The one way an asset's files reach the catalogue from Dagster code.

``DistilleryIOManager`` registers the values assets return; an asset that writes its files itself (and
returns ``MaterializeResult``) calls :func:`register_files` -- never ``Catalog.record_artifact`` directly --
so the inputs it loaded, named or declared with ``deps=`` are recorded the same way. It returns Dagster
metadata to put into the result::

    paths = write_many_files(...)
    meta = register_files(context, catalog.get(), paths, inputs=[upstream_path])
    return dg.MaterializeResult(metadata={**meta, "chunks": n})

An asset that writes files over a long time (one per LLM answer) registers each as it is written, with a
:class:`FileRegistrar` (``register_files`` is one in a single call): ``add`` puts the row into the
catalogue's spool at once (a kill loses none), ``commit`` inserts what is spooled and returns the metadata::

    files = FileRegistrar(context, catalog.get(), per_file_assets=["story_prompts"], outside_data_dir=True)
    generate(..., on_written=lambda path: files.add(NewArtifact(path, [InputRef(prompts, "story_prompts")])))
    meta = files.commit()
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from distillery_assets.catalog import ArtifactRecord, Catalog, InputRef, NewArtifact
from distillery_assets.markdown import INLINE_MD_LIMIT, fit_md_table, human_size
from distillery_assets.paths import data_dir
from io_managers.tracking import loaded_inputs


def inside_data_dir(path: Path, *, what: str) -> Path:
    """Resolve ``path`` and insist that it exists under data_dir(); the error names ``what``."""
    resolved = Path(path).resolve()
    root = data_dir()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"{what}: {resolved} is outside the data directory {root}; artefacts must live under it")
    if not resolved.exists():
        raise FileNotFoundError(f"{what}: {resolved} does not exist (write it before returning it)")
    return resolved


def _existing(path: Path, *, what: str, outside_data_dir: bool) -> Path:
    if not outside_data_dir:
        return inside_data_dir(path, what=what)
    resolved = Path(path).resolve()
    if not resolved.exists():
        raise FileNotFoundError(f"{what}: {resolved} does not exist (write it before registering it)")
    return resolved


def record_metadata(records: list[ArtifactRecord], catalog: Catalog) -> dict[str, Any]:
    """Dagster metadata describing one or more registered artefacts."""
    if len(records) == 1:
        rec = records[0]
        meta: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(catalog.absolute(rec.path))),
            "size": human_size(rec.bytes),  # the one unit that reads best; the exact byte count is in the catalogue
            "sha256": rec.sha256,
            "catalog_artifact_id": dg.MetadataValue.text(str(rec.id)),  # an id, not a measure: no plot
        }
        if rec.kind == "dir":
            meta["files"] = rec.files
        if rec.record_count is not None:
            meta["records"] = rec.record_count
        return meta
    asset = records[0].asset_key
    folder = _common_folder([r.path for r in records])
    head = f"in `{folder}/`\n\n" if folder else ""  # once above the table, so the names fit the column
    rows = [(r.path[len(folder) + 1:] if folder else r.path, human_size(r.bytes), r.record_count) for r in records]
    return {
        "files": len(records),
        "size": human_size(sum(r.bytes for r in records)),
        "files_table": dg.MetadataValue.md(head + fit_md_table(
            rows, ("file", "size", "records"), align="lrr", limit=INLINE_MD_LIMIT - len(head),
            more=lambda n: f"… and {n:,} more: every file with its sha256 in "
                           f"`python -m distillery_assets.catalog artifacts {asset}`")),
        "catalog_artifact_ids": dg.MetadataValue.json([r.id for r in records]),
    }


def _common_folder(paths: list[str]) -> str:
    """The folder every path lies in ("" when they share none), as the catalogue writes paths (``/``)."""
    parts = [p.split("/")[:-1] for p in paths]
    common = []
    for names in zip(*parts):
        if len(set(names)) != 1:
            break
        common.append(names[0])
    return "/".join(common)


def collect_inputs(
    catalog: Catalog,
    *,
    run_id: str,
    step_key: str,
    deps: Iterable[dg.AssetKey],
    partitions: Iterable[str | None],
    explicit: Iterable[Path | str | InputRef] = (),
) -> list[InputRef]:
    """Inputs of a step's outputs: what it loaded through the IO manager, what it names explicitly,
    and for upstream assets it only declared (``deps=``), their newest catalogued artefacts (the same
    partition when the upstream has it, otherwise every partition). Deduplicated by path."""
    refs = loaded_inputs(run_id, step_key)
    refs += [ref if isinstance(ref, InputRef) else InputRef(ref) for ref in explicit]
    loaded_keys = {ref.asset_key for ref in refs if ref.asset_key}
    wanted = [p for p in partitions if p is not None]
    for dep in (key.to_user_string() for key in deps):
        if dep in loaded_keys:
            continue
        rows = [row for p in wanted for row in [catalog.latest_artifact(dep, p)] if row]
        if not rows:
            rows = catalog.latest_artifacts(dep)
        refs.extend(InputRef(catalog.absolute(row["path"]), dep) for row in rows)
    unique: dict[str, InputRef] = {}
    for ref in refs:
        unique.setdefault(catalog.relative(ref.path), ref)
    return list(unique.values())


def _partition(context: dg.AssetExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


class FileRegistrar:
    """Registers the files one step of an asset writes, each the moment it is written (see module docstring).

    Everything Dagster is read when it is made; ``add`` may then be called from any thread (the LLM client's
    event loop) and only fingerprints the file and appends its row to the spool. The inputs of every file:
    ``inputs``, plus what :func:`collect_inputs` finds for the step (upstream assets declared with ``deps=``
    except ``per_file_assets``, which each file names itself), plus the file's own (``NewArtifact.inputs``)."""

    def __init__(self, context: dg.AssetExecutionContext, catalog: Catalog,
                 inputs: Iterable[Path | str | InputRef] = (),
                 *, asset_key: dg.AssetKey | None = None, partition: str | None = None,
                 record_count: int | None = None, metadata: Mapping[str, Any] | None = None,
                 outside_data_dir: bool = False, per_file_assets: Iterable[str] = ()):
        key = asset_key or context.asset_key
        self.catalog, self.name = catalog, key.to_user_string()
        self.run_id = context.run_id
        self.partition = partition if partition is not None else _partition(context)
        self.record_count, self.metadata, self.outside_data_dir = record_count, dict(metadata or {}), outside_data_dir
        skip = set(per_file_assets)
        self.inputs = collect_inputs(
            catalog,
            run_id=context.run_id,
            step_key=context.get_step_execution_context().step.key,
            deps=[dep.asset_key for dep in context.assets_def.specs_by_key[key].deps
                  if dep.asset_key.to_user_string() not in skip],
            partitions=[self.partition],
            explicit=inputs,
        )
        self._ids: list[str] = []
        self._memo: dict = {}
        self._lock = threading.Lock()

    def add(self, *paths: Path | NewArtifact, partition: str | None = None) -> None:
        """Spool the rows of files just written (``partition``: default the registrar's)."""
        items = [p if isinstance(p, NewArtifact) else NewArtifact(p) for p in paths]
        items = [NewArtifact(_existing(item.path, what=f"asset {self.name}", outside_data_dir=self.outside_data_dir),
                             inputs=[*self.inputs, *item.inputs],
                             record_count=item.record_count if item.record_count is not None else self.record_count,
                             metadata={**self.metadata, **(item.metadata or {})} or None)
                 for item in items]
        with self._lock:
            self._ids += self.catalog.spool_artifacts(
                asset_key=self.name, items=items, partition=partition if partition is not None else self.partition,
                run_id=self.run_id, memo=self._memo)

    @property
    def count(self) -> int:
        return len(self._ids)

    def commit(self) -> dict[str, Any]:
        """Insert every spooled row (waiting a bounded time for a busy catalogue: ``CatalogBusy`` says where
        the rows wait); Dagster metadata of the files registered (nothing when none was added)."""
        self.catalog.commit()
        with self._lock:
            ids = list(self._ids)
        records = self.catalog.committed_records(ids)
        return record_metadata(records, self.catalog) if records else {}


def register_files(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    paths: Iterable[Path | NewArtifact],
    inputs: Iterable[Path | str | InputRef] = (),
    *,
    asset_key: dg.AssetKey | None = None,
    partition: str | None = None,
    record_count: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    outside_data_dir: bool = False,
) -> dict[str, Any]:
    """Record each path (file or directory under data_dir) as an artefact of the current asset, in
    ``partition`` (default: the run's partition key, if it has one), all in one catalogue transaction.
    ``record_count`` overrides the counted lines of a .jsonl file (a directory has none of its own). Paths
    must lie under data_dir unless ``outside_data_dir`` (a user-owned folder such as the corpus root,
    catalogued by absolute path).

    Inputs: ``inputs`` plus whatever :func:`collect_inputs` finds for this step. A file made from inputs of
    its own (each ``.corpus`` from its ``prompts.txt``) comes as ``NewArtifact(path, inputs=[...],
    metadata={...})``: its inputs and metadata are added to the shared ones, and an upstream asset it names
    (``InputRef(path, asset_key)``) is not looked up again for every file::

        register_files(context, cat, [NewArtifact(p, [InputRef(prompts, "story_prompts")]) for p in written])
    """
    key = asset_key or context.asset_key
    given = [p if isinstance(p, NewArtifact) else NewArtifact(p) for p in paths]
    if not given:
        raise ValueError(f"asset {key.to_user_string()}: register_files called with no paths")
    named_per_file = {r.asset_key for item in given for r in item.inputs if isinstance(r, InputRef) and r.asset_key}
    files = FileRegistrar(context, catalog, inputs, asset_key=key, partition=partition, record_count=record_count,
                          metadata=metadata, outside_data_dir=outside_data_dir, per_file_assets=named_per_file)
    files.add(*given)
    return files.commit()
