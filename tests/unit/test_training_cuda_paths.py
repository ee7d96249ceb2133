"""The CUDA/QLoRA paths that no GPU here runs, checked against the installed libraries' own behaviour: the mixed
precision picked from native (not emulated) bf16, gradient checkpointing with use_reentrant said explicitly on
the 4-bit path, and a QLoRA model's parameters counted whole (bitsandbytes packs two 4-bit weights per byte)."""

from __future__ import annotations

import pytest
import torch

from distillery_assets.paths import repo_root
from distillery_assets.training import lora
from distillery_assets.training.config import load_train_config
from distillery_assets.training.loop import amp_dtype

CONFIGS = repo_root() / "data" / "config" / "training"


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_cuda_mixed_precision_follows_native_bf16_not_emulated(monkeypatch, native, expected):
    # a T4 / V100: bf16 only through emulation, which is_bf16_supported() counts unless told not to
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: True if including_emulation else native)
    assert amp_dtype("cuda") == expected


def test_qlora_gradient_checkpointing_sets_use_reentrant(monkeypatch):
    import peft
    import transformers

    cfg = load_train_config(CONFIGS / "poet.yaml", "full").model_copy(update={"gradient_checkpointing": True})
    assert cfg.quantization.load_in_4bit
    seen = {}
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(lambda base, **kw: seen.setdefault("load", kw) and "model"))
    monkeypatch.setattr(transformers, "BitsAndBytesConfig", lambda **kw: kw)

    def prepare(model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=None, **kw):
        seen["prepare"] = (use_gradient_checkpointing, gradient_checkpointing_kwargs)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare)
    assert lora.load_base_model("some/base", cfg, "cuda") == "model"
    assert seen["load"]["quantization_config"]["load_in_4bit"] is True
    assert seen["prepare"] == (True, {"use_reentrant": False})


def test_cpu_gradient_checkpointing_is_non_reentrant(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path)
    cfg = load_train_config(CONFIGS / "poet.yaml", "cpu_small").model_copy(update={"gradient_checkpointing": True})
    model = lora.load_base_model(str(tmp_path), cfg, "cpu")
    funcs = [m._gradient_checkpointing_func for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert funcs and all(f.keywords == {"use_reentrant": False} for f in funcs)


def test_qlora_parameter_count_counts_4bit_weights_whole():
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8, bias=False)  # 64 weights
            self.head = torch.nn.Linear(8, 4, bias=False)  # 32 weights

        def forward(self, x):
            return self.head(self.proj(x))

    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["head"]))  # LoRA: 2*8 + 4*2 = 24 trainable
    # what a 4-bit load leaves in place of proj.weight: 64 nf4 values packed two per byte, 32 bytes
    base = model.base_model.model.proj
    base.weight = bnb.nn.Params4bit(data=torch.zeros(32, 1, dtype=torch.uint8), requires_grad=False)
    trainable, total = lora.parameter_counts(model)
    assert trainable == 24 and total == 64 + 32 + 24
    packed = sum(p.numel() for p in model.parameters())
    assert packed == total - 32  # the plain numel sum halves the 4-bit weight
