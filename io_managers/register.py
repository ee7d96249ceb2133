"""The one way an asset's files reach the catalogue from Dagster code.

``DistilleryIOManager`` registers the values assets return; an asset that writes its files itself (and
returns ``MaterializeResult``) calls :func:`register_files` -- never ``Catalog.record_artifact`` directly --
so the inputs it loaded, named or declared with ``deps=`` are recorded the same way. It returns Dagster
metadata to put into the result::

    paths = write_many_files(...)
    meta = register_files(context, catalog.get(), paths, inputs=[upstream_path])
    return dg.MaterializeResult(metadata={**meta, "chunks": n})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from assets.meta import table_md
from distillery_assets.catalog import ArtifactRecord, Catalog, InputRef
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
            "bytes": rec.bytes,
            "sha256": rec.sha256,
            "catalog_artifact_id": rec.id,
        }
        if rec.kind == "dir":
            meta["files"] = rec.files
        if rec.record_count is not None:
            meta["records"] = rec.record_count
        return meta
    return {
        "files": len(records),
        "bytes": sum(r.bytes for r in records),
        "files_table": table_md([(r.path, r.bytes, r.record_count, r.sha256[:12]) for r in records],
                                ("path", "bytes", "records", "sha256"), align="lrrl"),
        "catalog_artifact_ids": dg.MetadataValue.json([r.id for r in records]),
    }


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


def register_files(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    paths: Iterable[Path],
    inputs: Iterable[Path | str | InputRef] = (),
    *,
    asset_key: dg.AssetKey | None = None,
    partition: str | None = None,
    record_count: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    outside_data_dir: bool = False,
) -> dict[str, Any]:
    """Record each path (file or directory under data_dir) as an artefact of the current asset, in
    ``partition`` (default: the run's partition key, if it has one). ``record_count`` overrides the counted
    lines of a .jsonl file (a directory has none of its own). Paths must lie under data_dir unless
    ``outside_data_dir`` (a user-owned folder such as the corpus root, catalogued by absolute path).

    Inputs: ``inputs`` plus whatever :func:`collect_inputs` finds for this step."""
    key = asset_key or context.asset_key
    part = partition if partition is not None else _partition(context)
    input_refs = collect_inputs(
        catalog,
        run_id=context.run_id,
        step_key=context.get_step_execution_context().step.key,
        deps=[dep.asset_key for dep in context.assets_def.specs_by_key[key].deps],
        partitions=[part],
        explicit=inputs,
    )
    records = [
        catalog.record_artifact(
            asset_key=key.to_user_string(),
            partition=part,
            path=_existing(p, what=f"asset {key.to_user_string()}", outside_data_dir=outside_data_dir),
            run_id=context.run_id,
            record_count=record_count,
            inputs=input_refs,
            metadata=metadata,
        )
        for p in paths
    ]
    if not records:
        raise ValueError(f"asset {key.to_user_string()}: register_files called with no paths")
    return record_metadata(records, catalog)
