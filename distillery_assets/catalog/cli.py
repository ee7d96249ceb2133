"""Command line view of the catalogue (rich tables).

    python -m distillery_assets.catalog lineage poet_gguf      # which files, from which inputs, made it,
                                                               # down to the edited files (path + sha256)
    python -m distillery_assets.catalog lineage --sources poet_gguf  # only those edited files
    python -m distillery_assets.catalog lineage --brief poet_gguf    # edges between assets, edited files by folder
    python -m distillery_assets.catalog derived theme/books/1.txt  # what was made from a file or asset
    python -m distillery_assets.catalog artifacts [ASSET]      # newest artefact per asset/partition
    python -m distillery_assets.catalog verify [ASSET]         # files still match their catalogued sha256?
                                                               # and files on disk no row knows
    python -m distillery_assets.catalog verify --repair        # ... recording those with their sha256 and asset
    python -m distillery_assets.catalog recover                # record rows killed runs left in the spool
    python -m distillery_assets.catalog llm-usage              # calls, cache hits, tokens, cost
    python -m distillery_assets.catalog runs                   # training / evaluation runs
    python -m distillery_assets.catalog runs --name thyme_eval --latest --metrics --transpose
                                                               # newest run per experiment, one column each
    python -m distillery_assets.catalog sql "select ..."       # anything else
Options: ``--db PATH`` (default ``$DISTILLERY_DATA_DIR/catalog.duckdb``), ``--json`` (machine output).
Piped output is not wrapped to 80 columns (tables keep their natural width; ``$COLUMNS`` still wins).
Every command but ``sql`` with a statement that writes, ``verify --repair`` and ``recover`` opens the file
read-only: a query never changes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distillery_assets.catalog.sources import SOURCE_PREFIX, is_source_key
from distillery_assets.catalog.spool import spool_files
from distillery_assets.catalog.store import Catalog, CatalogError
from distillery_assets.corpus.layout import CORPUS_ROOT_ENV
from distillery_assets.paths import data_dir

# First words of the SQL statements that only read (``sql`` opens the file read-only for these; anything else
# opens it for writing, as the statement may need).
READ_STATEMENTS = {"select", "with", "from", "show", "describe", "desc", "summarize", "explain", "values", "table",
                   "pragma"}

ARTIFACT_COLUMNS = "asset_key, partition, path, kind, bytes, record_count, left(sha256, 12) AS sha256, run_id, strftime(created_at, '%Y-%m-%d %H:%M:%S') AS created_at"


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{title} ({len(rows)} rows)", show_lines=False)
    for name in rows[0].keys() if rows else ["(no rows)"]:
        table.add_column(str(name), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distillery_assets.catalog", description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=None, help="catalogue file (default: data_dir()/catalog.duckdb)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines instead of a table")
    sub = parser.add_subparsers(dest="command", required=True)
    lineage = sub.add_parser("lineage", help="inputs behind the newest artefacts of ASSET, transitively, down to "
                                             "the edited files (sources)")
    lineage.add_argument("asset")
    lineage.add_argument("--sources", action="store_true",
                         help="only the edited files reached: path, full sha256, bytes, who read them, changed since?")
    lineage.add_argument("--brief", action="store_true",
                         help="only the edges between assets, and the edited files as one row per folder")
    derived = sub.add_parser("derived", help="artefacts made from an asset or a file, transitively")
    derived.add_argument("source", help="asset key or path (relative to the data directory)")
    artifacts = sub.add_parser("artifacts", help="newest artefact per asset and partition")
    artifacts.add_argument("asset", nargs="?")
    artifacts.add_argument("--all", action="store_true", help="every version, not only the newest")
    verify = sub.add_parser("verify", help="re-hash the newest artefacts and walk their folders (and the corpus "
                                           "root) for files no row knows; exit 1 if any is missing, changed or "
                                           "uncatalogued")
    verify.add_argument("asset", nargs="?")
    verify.add_argument("--repair", action="store_true",
                        help="record the uncatalogued files (sha256, and the asset and partition of their "
                             "catalogued siblings), after the rows killed runs left in the spool")
    sub.add_parser("recover", help="record the rows that killed runs, or runs that found the catalogue busy, left "
                                   "in the spool (every run does this before its first write)")
    sub.add_parser("llm-usage", help="LLM calls, cache hits, tokens and cost per provider/model/tag")
    runs = sub.add_parser("runs", help="training and evaluation runs")
    runs.add_argument("--kind", help="only runs of this kind (train, eval, ...)")
    runs.add_argument("--name", help="only runs of this name (e.g. thyme_eval)")
    runs.add_argument("--latest", action="store_true", help="only the newest run per name and partition")
    runs.add_argument("--metrics", action="store_true",
                      help="one column per numeric metric instead of the params and metrics JSON, so runs compare "
                           "side by side (nested metrics are left out; --json keeps them)")
    runs.add_argument("--transpose", action="store_true",
                      help="as --metrics, but one row per metric and one column per run (easier with many metrics)")
    sql = sub.add_parser("sql", help="run one SQL statement")
    sql.add_argument("statement")
    return parser


def _lineage_tables(args: argparse.Namespace, catalog: Catalog) -> list[tuple[str, list[dict[str, Any]]]]:
    """The edges (unless ``--sources``), then the edited files they reach. In a table an edge to a source
    shows ``source`` and the file's path under its folder (``inputs/...``, ``config/...``), and the sources
    table gives each file's whole sha256; ``--json`` rows keep the stored paths."""
    sources = catalog.lineage_sources(args.asset)
    if args.brief:
        return _brief_lineage(args.asset, catalog.lineage(args.asset), sources)
    sources_title = f"edited files behind {args.asset}"
    if not args.json:  # the key already is the file's path under its folder; the stored path is in --json
        sources = [{"file": r["source"][len(SOURCE_PREFIX):], "sha256": r["sha256"], "bytes": r["bytes"],
                    "read_by": r["read_by"], "now": r["now"]} for r in sources]
    if args.sources:
        return [(sources_title, sources)]
    rows = catalog.lineage(args.asset)
    if args.json:
        return [(f"lineage of {args.asset}", rows)]
    for row in rows:
        row["input_sha256"] = (row["input_sha256"] or "")[:12]
        if is_source_key(row["input_asset_key"]):
            row["input_asset_key"], row["input_path"] = "source", row["input_asset_key"][len(SOURCE_PREFIX):]
    return [(f"lineage of {args.asset}", rows), (sources_title, sources)] if sources else [
        (f"lineage of {args.asset}", rows)]


def _brief_lineage(asset: str, rows: list[dict[str, Any]],
                   sources: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The lineage without its per-file rows: the edges between assets, then the edited files grouped by
    their folder (how many, bytes, which assets read them, and whether any changed since)."""
    edges = [{"depth": r["depth"], "asset_key": r["asset_key"], "partition": r["partition"],
              "input_asset_key": r["input_asset_key"], "input_partition": r["input_partition"],
              "input_path": r["input_path"], "input_sha256": (r["input_sha256"] or "")[:12]}
             for r in rows if not is_source_key(r["input_asset_key"])]
    folders: dict[str, dict[str, Any]] = {}
    for r in sources:
        folder = str(Path(r["source"][len(SOURCE_PREFIX):]).parent) + "/"
        entry = folders.setdefault(folder, {"folder": folder, "files": 0, "bytes": 0, "read_by": set(), "now": {}})
        entry["files"] += 1
        entry["bytes"] += r["bytes"] or 0
        entry["read_by"].update(part.strip() for part in str(r["read_by"] or "").split(",") if part.strip())
        entry["now"][r["now"]] = entry["now"].get(r["now"], 0) + 1
    grouped = [entry | {"read_by": ", ".join(sorted(entry["read_by"])),
                        "now": ", ".join(f"{n} {state}" for state, n in sorted(entry["now"].items()))}
               for _, entry in sorted(folders.items())]
    tables = [(f"assets behind {asset}", edges)]
    return tables + [(f"edited files behind {asset}, by folder", grouped)] if grouped else tables


def _rows(args: argparse.Namespace, catalog: Catalog) -> tuple[str, list[dict[str, Any]]]:
    if args.command == "derived":
        return f"made from {args.source}", catalog.derived_from(args.source)
    if args.command == "artifacts":
        source = "artifacts" if args.all else "latest_artifacts"
        sql = f"SELECT {ARTIFACT_COLUMNS} FROM {source}"
        params: list[Any] = []
        if args.asset:
            sql += " WHERE asset_key = ?"
            params.append(args.asset)
        return "artifacts", catalog.query(sql + " ORDER BY asset_key, partition, id", params)
    if args.command == "verify":
        return "verification", _verify(args, catalog)
    if args.command == "recover":
        return "recovered from the spool", [catalog.recover()]
    if args.command == "llm-usage":
        return "LLM usage", catalog.query("SELECT * FROM llm_usage")
    if args.command == "runs":
        return _runs(args, catalog)
    return "sql", catalog.query(args.statement)


def _runs(args: argparse.Namespace, catalog: Catalog) -> tuple[str, list[dict[str, Any]]]:
    where, params = [], []
    for column in ("kind", "name"):
        if getattr(args, column):
            where.append(f"{column} = ?")
            params.append(getattr(args, column))
    sql = ("SELECT id, kind, name, partition, run_id, params, metrics, strftime(created_at, '%Y-%m-%d %H:%M:%S') "
           "AS created_at FROM runs" + (" WHERE " + " AND ".join(where) if where else ""))
    if args.latest:
        sql += " QUALIFY row_number() OVER (PARTITION BY name, partition ORDER BY id DESC) = 1"
    rows = catalog.query(sql + " ORDER BY id", params)
    title = "runs" + "".join(f" {c}={getattr(args, c)}" for c in ("kind", "name") if getattr(args, c))
    if not (args.metrics or args.transpose):
        return title, rows
    flat, columns = [], {}
    for row in rows:
        metrics = json.loads(row["metrics"]) if row["metrics"] else {}
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        columns.update(dict.fromkeys(numbers))
        flat.append(({k: row[k] for k in ("id", "kind", "name", "partition", "created_at")}, numbers))
    shown = (lambda v: v) if args.json else (lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    if args.transpose:
        heads = [f"{base['partition'] or base['name']} #{base['id']}" for base, _ in flat]
        return title, [{"metric": k} | {h: shown(numbers[k]) if k in numbers else None
                                        for h, (_, numbers) in zip(heads, flat)} for k in columns]
    return title, [base | {k: shown(numbers[k]) if k in numbers else None for k in columns} for base, numbers in flat]


def _corpus_root() -> Path:
    """The corpus root as the corpus assets find it (without creating it)."""
    return Path(os.environ.get(CORPUS_ROOT_ENV) or data_dir() / "corpus").expanduser()


def _verify(args: argparse.Namespace, catalog: Catalog) -> list[dict[str, Any]]:
    root = _corpus_root()
    trees = [root] if root.is_dir() else []
    rows = catalog.verify(args.asset, trees=trees)
    if args.repair:
        repaired = {catalog.absolute(r.path) for r in catalog.repair(catalog.untracked(args.asset, trees=trees))}
        now = {f.path for f in catalog.untracked(args.asset, trees=trees)}
        for row in rows:
            path = catalog.absolute(row["path"])
            if row["status"] == "uncatalogued" and path not in now:
                row["status"] = "repaired" if path in repaired else "recovered"
    return rows


def _reads_only(args: argparse.Namespace) -> bool:
    """Whether the command only reads the catalogue (all but ``sql`` with a writing statement, ``verify
    --repair`` and ``recover``)."""
    if args.command == "recover" or (args.command == "verify" and args.repair):
        return False
    if args.command != "sql":
        return True
    words = args.statement.lstrip(" \t\n(").split(None, 1)
    return bool(words) and words[0].lower().rstrip(";") in READ_STATEMENTS


def _console() -> Console:
    """A terminal's own width; piped or redirected, wide enough that no table is folded at 80 columns."""
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=100_000)
    return console


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = _console()
    errors = Console(stderr=True, soft_wrap=True)
    catalog = Catalog(args.db, read_only=_reads_only(args))
    if not catalog.path.exists() and catalog.read_only:
        errors.print(f"no catalogue at {catalog.path}", style="red", markup=False)
        return 2
    try:
        tables = _lineage_tables(args, catalog) if args.command == "lineage" else [_rows(args, catalog)]
    except CatalogError as exc:
        errors.print(str(exc), style="red", markup=False)
        return 1
    for title, rows in tables:
        if args.json:
            for row in rows:
                sys.stdout.write(json.dumps(row, default=str) + "\n")
        else:
            console.print(_table(title, rows))
    rows = tables[0][1]
    if args.command == "verify":
        waiting = spool_files(catalog.spool_dir)
        if waiting and not args.repair:
            errors.print(f"{len(waiting)} spool file(s) in {catalog.spool_dir} hold rows not in the catalogue yet "
                         "(of a run still going, killed, or that found the catalogue busy): the next run records "
                         "them, or `verify --repair` / `recover`", style="yellow", markup=False)
        if any(row["status"] not in ("ok", "repaired", "recovered") for row in rows):
            return 1
    if args.command == "lineage" and not rows:
        what = "edited files" if args.sources else "inputs"
        errors.print(f"no recorded {what} for asset {args.asset!r}", style="yellow", markup=False)
    return 0
