"""The catalogue CLI prints lineage, artefacts, usage, runs and ad-hoc SQL."""

import json
import subprocess
import sys

from distillery_assets.catalog import Catalog
from distillery_assets.catalog.cli import main
from distillery_assets.paths import repo_root


def _seed(data_dir):
    cat = Catalog()
    (data_dir / "a.txt").write_text("a")
    (data_dir / "b.jsonl").write_text("{}\n")
    cat.record_artifact(asset_key="raw", path=data_dir / "a.txt")
    cat.record_artifact(asset_key="poet_gguf", path=data_dir / "b.jsonl", inputs=[data_dir / "a.txt"])
    cat.record_llm_calls([{"request_key": "k", "provider": "local", "model": "m", "ok": True, "cached": False,
                           "input_tokens": 7, "output_tokens": 3}])
    cat.record_run(kind="eval", name="thyme_lm", metrics={"perplexity": 12.5})


def test_lineage_table_names_inputs(data_dir, capsys):
    _seed(data_dir)
    assert main(["lineage", "poet_gguf"]) == 0
    out = capsys.readouterr().out
    assert "lineage of poet_gguf (1 rows)" in out and "a.txt" in out and "raw" in out


def test_brief_lineage_keeps_asset_edges_and_groups_edited_files_by_folder(data_dir, capsys, monkeypatch):
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(data_dir / "inputs"))
    cat = Catalog()
    (data_dir / "inputs" / "verse").mkdir(parents=True)
    poems = []
    for i in range(3):
        poems.append(data_dir / "inputs" / "verse" / f"p{i}.txt")
        poems[-1].write_text(f"poem {i}\n")
    (data_dir / "pairs.jsonl").write_text("{}\n")
    (data_dir / "b.gguf").write_text("gguf")
    pairs = cat.record_artifact(asset_key="pairs", path=data_dir / "pairs.jsonl",
                                inputs=poems)
    cat.record_artifact(asset_key="poet_gguf", path=data_dir / "b.gguf", inputs=[data_dir / "pairs.jsonl"])
    poems[0].write_text("edited\n")
    assert pairs
    assert main(["--json", "lineage", "--brief", "poet_gguf"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    edges, folders = [r for r in rows if "depth" in r], [r for r in rows if "folder" in r]
    assert [(r["asset_key"], r["input_asset_key"]) for r in edges] == [("poet_gguf", "pairs")]
    assert folders == [{"folder": "inputs/verse/", "files": 3, "bytes": 21, "read_by": "pairs",
                        "now": "1 edited, 2 unchanged"}]
    assert main(["lineage", "--brief", "poet_gguf"]) == 0
    out = capsys.readouterr().out
    assert "assets behind poet_gguf (1 rows)" in out and "edited files behind poet_gguf, by folder (1 rows)" in out
    assert "p1.txt" not in out


def test_json_output_for_each_command(data_dir, capsys):
    _seed(data_dir)
    expectations = {
        ("artifacts",): lambda rows: {r["asset_key"] for r in rows} == {"raw", "poet_gguf"},
        ("artifacts", "raw"): lambda rows: [r["path"] for r in rows] == ["a.txt"],
        ("derived", "a.txt"): lambda rows: [r["asset_key"] for r in rows] == ["poet_gguf"],
        ("llm-usage",): lambda rows: rows[0]["input_tokens"] == 7 and rows[0]["calls"] == 1,
        ("runs",): lambda rows: json.loads(rows[0]["metrics"]) == {"perplexity": 12.5},
        ("sql", "select count(*) as n from artifacts"): lambda rows: rows == [{"n": 2}],
    }
    for args, check in expectations.items():
        assert main(["--json", *args]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
        assert check(rows), (args, rows)


def test_bad_sql_and_missing_db_exit_nonzero(data_dir, tmp_path, capsys):
    _seed(data_dir)
    assert main(["sql", "select nope from artifacts"]) == 1
    assert "catalog.duckdb: Binder Error" in capsys.readouterr().err
    assert main(["--db", str(tmp_path / "none.duckdb"), "runs"]) == 2


def test_module_entry_point_runs(data_dir):
    _seed(data_dir)
    proc = subprocess.run([sys.executable, "-m", "distillery_assets.catalog", "--json", "runs"],
                          cwd=repo_root(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["name"] == "thyme_lm"


def test_read_commands_leave_the_catalogue_file_as_it_was(data_dir, capsys):
    import hashlib
    import os

    from distillery_assets.catalog import store

    _seed(data_dir)
    store._SCHEMA_READY.clear()  # as in a fresh process, where a writable open would (re)create the schema
    db = data_dir / "catalog.duckdb"
    os.utime(db, (1_000_000, 1_000_000))
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime, sorted(p.name for p in data_dir.iterdir()))
    for args in (["lineage", "poet_gguf"], ["lineage", "--sources", "poet_gguf"], ["artifacts"], ["artifacts", "--all"],
                 ["verify"], ["llm-usage"], ["runs"], ["derived", "a.txt"], ["sql", "select count(*) from llm_calls"],
                 ["sql", "  WITH x AS (SELECT 1) SELECT * FROM x"]):
        assert main(args) == 0, args
    capsys.readouterr()
    after = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime, sorted(p.name for p in data_dir.iterdir()))
    assert after == before
    # a writing statement still writes (the file is opened for writing only then)
    assert main(["sql", "delete from runs"]) == 0
    assert Catalog().query("select count(*) as n from runs") == [{"n": 0}]


def test_read_command_on_a_missing_catalogue_creates_nothing(data_dir, capsys):
    assert main(["artifacts"]) == 2
    assert "no catalogue at" in capsys.readouterr().err
    assert not (data_dir / "catalog.duckdb").exists()


def test_piped_tables_are_not_folded_at_80_columns(data_dir):
    import os

    cat = Catalog()
    long_name = "a_rather_long_asset_name_that_would_not_fit_in_eighty_columns_together_with_the_others"
    (data_dir / "c.txt").write_text("c")
    cat.record_artifact(asset_key=long_name, path=data_dir / "c.txt")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "distillery_assets.catalog", "artifacts"], cwd=repo_root(),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    [row] = [line for line in proc.stdout.splitlines() if long_name in line]
    assert "c.txt" in row and len(row) > 120  # one line per row, at its natural width


def test_runs_compare_experiments_side_by_side(data_dir, capsys):
    cat = Catalog()
    cat.record_run(kind="eval", name="thyme_eval", partition="books-cpu", metrics={"thyme.bpb": 2.5, "n": 3})
    cat.record_run(kind="eval", name="thyme_eval", partition="books-cpu", metrics={"thyme.bpb": 2.3, "n": 3})
    cat.record_run(kind="eval", name="thyme_eval", partition="books-seed",
                   metrics={"thyme.bpb": 1.794, "transformer.bpb": 1.565, "per_epoch": {"thyme": [1, 2]}})
    cat.record_run(kind="train", name="thyme_model/thyme", partition="books-seed", metrics={"steps": 6100})

    assert main(["--json", "runs", "--name", "thyme_eval", "--latest", "--metrics"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["partition"], r["thyme.bpb"]) for r in rows] == [("books-cpu", 2.3), ("books-seed", 1.794)]
    assert rows[0]["transformer.bpb"] is None and rows[1]["n"] is None and "per_epoch" not in rows[1]

    assert main(["--json", "runs", "--kind", "eval", "--transpose"]) == 0  # every eval run, one column each
    rows = {r["metric"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"thyme.bpb", "n", "transformer.bpb"}
    assert rows["thyme.bpb"] == {"metric": "thyme.bpb", "books-cpu #1": 2.5, "books-cpu #2": 2.3, "books-seed #3": 1.794}

    assert main(["runs", "--name", "thyme_eval", "--latest", "--transpose"]) == 0
    out = capsys.readouterr().out
    assert "books-seed #3" in out and "1.794" in out and "books-cpu #1" not in out
