"""The poet eval on real files: the embedded base checkpoint, a LoRA adapter, f16 GGUFs made by the converter and
llama.cpp generation, on a few held-out briefs (``min_prompts`` lowered in a copy of the configs)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from distillery_assets.embedded import smollm2_gguf_path
from distillery_assets.paths import config_dir
from distillery_assets.poetry import evaluate
from distillery_assets.poetry.settings import PoetryConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def few_prompts(tmp_path, monkeypatch):
    dest = tmp_path / "config"
    shutil.copytree(config_dir(), dest)
    path = dest / "poetry" / "eval.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["min_prompts"] = 3
    path.write_text(yaml.safe_dump(cfg))
    inf = dest / "poetry" / "inference.yaml"
    icfg = yaml.safe_load(inf.read_text())
    icfg["profiles"]["small"]["draft"]["max_tokens"] = 48
    inf.write_text(yaml.safe_dump(icfg))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(dest))
    monkeypatch.delenv("DISTILLERY_POETRY_PROFILE", raising=False)


def test_a_no_op_adapter_merged_answers_exactly_as_the_base(data_dir, tmp_path, few_prompts):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery_assets.training.base_model import build_embedded_base, embedded_base_dir

    base = embedded_base_dir(data_dir)
    build_embedded_base(base)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    adapter = tmp_path / "adapter"
    # a fresh LoRA has B = 0: merged into the base it changes no weight
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(adapter)

    models, reused = evaluate.prepare_models(str(base), adapter, smollm2_gguf_path(), data_dir / "eval" / "models")
    assert reused == {"base": False, "finetune": False}
    assert evaluate.prepare_models(str(base), adapter, smollm2_gguf_path(), data_dir / "eval" / "models")[1] == {
        "base": True, "finetune": True}
    prompts = evaluate.heldout_prompts("poet")[:3]
    ev = evaluate.evaluate_role("poet", models, data_dir / "eval" / "poet", cfg=PoetryConfig(), prompts=prompts,
                                log=lambda _: None)
    base_texts = [g.text for g in ev.generations["base"]]
    assert all(base_texts) and base_texts == [g.text for g in ev.generations["finetune"]]
    assert ev.vs_base["verse"].diff == 0.0 and not ev.worse_than_base()
    assert len(ev.generations["gguf"]) == 3  # the Q4_1 embedded file: other weights, answered on the same prompts
