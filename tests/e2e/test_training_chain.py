"""The whole fine-tune chain through Dagster on the embedded SmolLM2-135M, CPU only.

base_model -> <role>_lora -> <role>_gguf -> <role>_gguf_upload, with the real compute (local), hub
(no token), catalogue and IO manager, and the three asset checks (loss, perplexity, chat stop).
A short `cpu_small`-style profile keeps it at about a minute and a half on two cores.
"""

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.finetune import FinetuneChain, base_model, finetune_chain
from distillery_assets.catalog import Catalog
from distillery_assets.paths import data_dir, repo_root
from distillery_assets.training.demo_data import write_demo_chatml
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource

pytestmark = pytest.mark.e2e

QUICK = """role: demo
profiles:
  quick:
    base_model: embedded
    lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
    learning_rate: 1.0e-3
    warmup_ratio: 0.03
    epochs: 1
    batch_size: 4
    max_seq: 128
    max_grad_norm: 1.0
    max_train_examples: 32
    max_val_examples: 8
    max_steps: 6
    threads: 1   # one torch thread: steadier than two when the cores are shared
    export: {quant: Q4_K_M, ppl_max_examples: 8}
"""


@dg.asset
def demo_train() -> Path:
    return write_demo_chatml(data_dir() / "demo")[0]


@dg.asset(deps=[demo_train])
def demo_val() -> Path:
    return data_dir() / "demo" / "val.jsonl"


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "config"
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "demo.yaml").write_text(QUICK)
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(folder))
    monkeypatch.setenv("DISTILLERY_TRAIN_PROFILE", "quick")
    return folder


def test_chain_trains_exports_checks_and_declines_upload_without_token(data_dir, config_dir):
    chain = finetune_chain(FinetuneChain(name="demo", train_asset="demo_train", val_asset="demo_val", group="demo",
                                         config_file="demo.yaml", lora_asset="demo_lora",
                                         gguf_asset="demo_gguf", upload_asset="demo_gguf_upload"))
    catalog = CatalogResource()
    result = dg.materialize(
        [base_model, demo_train, demo_val, *chain],
        resources={"compute": ComputeResource(backend="local"), "catalog": catalog, "hub": HubResource(),
                   "io_manager": DistilleryIOManager(catalog=catalog)},
    )
    assert result.success

    def meta(key: str) -> dict:
        mats = result.asset_materializations_for_node(key)
        return {k: v.value for k, v in mats[-1].metadata.items()}

    lora = meta("demo_lora")
    assert lora["trained_val_loss"] < lora["base_val_loss"]
    assert lora["ran_on"] == "local CPU" and lora["steps"] == 6
    assert "![loss curves](data:image/png;base64," in lora["losses_full"]

    gguf = meta("demo_gguf")
    path = data_dir / "models/gguf/demo/quick/SmolLM2-135M-Instruct-demo-Q4_K_M.gguf"
    assert path.is_file() and gguf["file"] == path.name
    assert gguf["quant_declared"] == "Q4_K_M" and gguf["chat_finish_reason"] == "stop"
    assert "sizes" in gguf and not any(k.endswith("_bytes") for k in gguf)  # one size, in the unit people read
    record = json.loads((path.parent / (path.stem + ".json")).read_text())
    assert record["gguf_bytes"] < record["intermediate_bytes"] < record["merged_bytes"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.stem + ".json"]

    upload = meta("demo_gguf_upload")
    assert upload["uploaded"] is False and upload["reason"] == "HF_TOKEN not set"
    assert "SmolLM2-135M-Instruct" in upload["model_card"]

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"trained_val_loss_below_base", "ppl_degradation_within_limit",
                           "chat_reply_ends_on_end_of_turn", "base_model_loads", "parameter_count_as_configured"}
    assert checks["base_model_loads"].passed and checks["parameter_count_as_configured"].passed
    assert checks["trained_val_loss_below_base"].passed
    assert checks["chat_reply_ends_on_end_of_turn"].passed
    ppl = checks["ppl_degradation_within_limit"]
    assert ppl.severity == dg.AssetCheckSeverity.WARN
    print("ppl degradation %", ppl.metadata["degradation_pct"].value)

    runs = Catalog(data_dir / "catalog.duckdb").query("select kind, name, metrics from runs order by id")
    assert [(r["kind"], r["name"]) for r in runs] == [("train", "demo_lora"), ("export", "demo_gguf")]
    assert round(json.loads(runs[0]["metrics"])["val_loss"], 4) == lora["trained_val_loss"]  # the UI rounds, the catalogue keeps it exact

    # Re-materializing reuses the finished adapter and GGUF instead of training again.
    again = dg.materialize(
        [base_model, demo_train, demo_val, *chain],
        resources={"compute": ComputeResource(backend="local"), "catalog": catalog, "hub": HubResource(),
                   "io_manager": DistilleryIOManager(catalog=catalog)},
        selection=["demo_lora", "demo_gguf"],
    )
    assert again.success
    reused = {k: again.asset_materializations_for_node(k)[-1].metadata["reused_finished_run"].value
              for k in ("demo_lora", "demo_gguf")}
    assert reused == {"demo_lora": True, "demo_gguf": True}
    assert len(Catalog(data_dir / "catalog.duckdb").query("select id from runs")) == 2
    assert repo_root()  # the test ran against the checkout's code
