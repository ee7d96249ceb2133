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
