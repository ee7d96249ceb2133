"""The training library on a tiny random Llama with SmolLM2's real tokenizer and chat template.

Fast enough for the unit tier: assistant-only masking, truncation and rejects, a LoRA that lowers the
validation loss, reuse of a finished run, and the export chain (merge -> GGUF f16 -> Q4_K_M -> perplexity)
with its intermediates cleaned up.
"""

import json
import math
from pathlib import Path

import pytest

from distillery_assets.embedded import smollm2_gguf_path
from distillery_assets.training.base_model import EMBEDDED_BASE_RELDIR
from distillery_assets.training.chat_data import IGNORE, load_chat_split, tokenize_messages
from distillery_assets.training.config import TrainConfig
from distillery_assets.training.demo_data import demo_record, write_demo_chatml
from distillery_assets.training.results import ExportResult, TrainResult
from distillery_assets.training.steps import ExportGGUFSpec, TrainLoraSpec
from resources.modal_app import parse_spec


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture
def tiny_root(data_dir, tokenizer) -> Path:
    """data_dir with a tiny random Llama saved where the `embedded` base is expected."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    base = data_dir / EMBEDDED_BASE_RELDIR
    LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    write_demo_chatml(data_dir / "demo")
    return data_dir


def _cfg(**over) -> TrainConfig:
    body = dict(role="demo", profile="test", base_model="embedded",
                lora=dict(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]),
                learning_rate=5e-3, epochs=2, batch_size=8, max_seq=128, max_steps=8, threads=1,
                export=dict(quant="Q4_K_M", ppl_max_examples=4))
    body.update(over)
    return TrainConfig.model_validate(body)


def test_labels_cover_exactly_the_assistant_reply_and_end_of_turn(tokenizer):
    record = demo_record("basil", "sun", "daily")
    ids, labels = tokenize_messages(tokenizer, record["messages"])
    kept = [t for t, label in zip(ids, labels) if label != IGNORE]
    text = tokenizer.decode(kept)
    assert text.startswith(record["messages"][-1]["content"])
    assert "<|im_end|>" in text
    assert "garden helper" not in text and "Tell me about" not in text  # system and user turns masked
    assert all(label in (IGNORE, t) for t, label in zip(ids, labels))


def test_every_assistant_turn_is_trained_in_a_multi_turn_record(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "one"},
                {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "two"},
                {"role": "assistant", "content": "second answer"}]
    ids, labels = tokenize_messages(tokenizer, messages)
    text = tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])
    assert "first answer" in text and "second answer" in text and "two" not in text.replace("second", "")


def test_bad_lines_are_rejected_with_file_and_line(tmp_path, tokenizer):
    good = demo_record("fern", "shade", "weekly")
    lines = [json.dumps(good), "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
             json.dumps({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}),
             json.dumps({"text": "no messages"})]
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join(lines) + "\n")
    split = load_chat_split(path, tokenizer, max_seq=256)
    assert len(split.examples) == 1
    reasons = {r.source: r.reason for r in split.rejects}
    assert set(reasons) == {"split.jsonl:2", "split.jsonl:3", "split.jsonl:4", "split.jsonl:5"}
    assert "malformed JSONL" in reasons["split.jsonl:2"]
    assert "last message must be the assistant" in reasons["split.jsonl:3"]
    assert "messages[0].role" in reasons["split.jsonl:4"]
    assert "'messages'" in reasons["split.jsonl:5"]


def test_truncation_is_counted_and_fully_cut_replies_rejected(tmp_path, tokenizer):
    long_reply = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}]}
    long_prompt = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(long_reply) + "\n" + json.dumps(long_prompt) + "\n")
    split = load_chat_split(path, tokenizer, max_seq=64)
    assert split.truncated == 2
    assert len(split.examples) == 1 and len(split.examples[0].input_ids) == 64
    assert [r.source for r in split.rejects] == ["s.jsonl:2"] and "max_seq=64" in split.rejects[0].reason


def _train_spec(cfg=None, **over) -> TrainLoraSpec:
    fields = dict(config=cfg or _cfg(), train="demo/train.jsonl", val="demo/val.jsonl", adapter_dir="models/lora/demo")
    fields.update(over)
    return TrainLoraSpec(**fields)


def test_train_step_lowers_val_loss_saves_adapter_and_reuses_a_finished_run(tiny_root):
    spec = _train_spec()
    first = spec.run(tiny_root)
    assert isinstance(first, TrainResult)
    assert first.reused is False
    assert first.val_loss < first.base_val_loss and first.loss_improved
    assert len(first.epochs) == 2 and first.steps == 8
    assert first.train.examples == 32 and first.val.examples == 8
    adapter = tiny_root / "models/lora/demo"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not [p for p in adapter.parent.iterdir() if p.name.startswith(".tmp-")]
    assert not (adapter.parent / ".demo.checkpoint").exists()  # a finished run leaves no checkpoint behind
    history = json.loads((adapter / "training_history.json").read_text())
    assert [s["step"] for s in history["steps"]] == list(range(1, 9)) and len(history["epochs"]) == 2
    again = spec.run(tiny_root)
    assert again.reused is True and again.val_loss == first.val_loss
    # the result crosses the wire as a dict and comes back the same
    assert TrainResult.model_validate(json.loads(json.dumps(first.model_dump(mode="json")))) == first
    # a change in the data invalidates the finished run
    with open(tiny_root / "demo/train.jsonl", "a") as fh:
        fh.write(json.dumps(demo_record("nettle", "shade", "weekly")) + "\n")
    assert _train_spec(_cfg(max_steps=1, epochs=1)).run(tiny_root).reused is False


def test_full_profile_refuses_to_run_on_cpu(tiny_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _cfg(optimizer="paged_adamw_8bit", quantization={"load_in_4bit": True})
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _train_spec(cfg).run(tiny_root)


def test_export_step_writes_one_q4_k_m_gguf_and_measures_perplexity(tiny_root):
    cfg = _cfg(max_steps=2, epochs=1)
    _train_spec(cfg).run(tiny_root)
    spec = ExportGGUFSpec(config=cfg, adapter_dir="models/lora/demo", val="demo/val.jsonl", out_dir="models/gguf/demo")
    out = spec.run(tiny_root)
    assert isinstance(out, ExportResult)
    name = "SmolLM2-135M-Instruct-demo-Q4_K_M.gguf"
    assert out.gguf_file == name and out.gguf_path == f"models/gguf/demo/{name}"
    assert spec.outputs() == [f"models/gguf/demo/{name}", f"models/gguf/demo/{name[:-5]}.json"]
    assert sorted(p.name for p in (tiny_root / "models/gguf/demo").iterdir()) == [name, name[:-5] + ".json"]
    info = out.gguf
    assert info.file_type == "Q4_K_M" and info.has_chat_template and info.eos_token == "<|im_end|>"
    assert sum(info.tensor_types.values()) > 0
    assert math.isfinite(out.ppl_merged) and math.isfinite(out.ppl_gguf)
    # same weights, same tokens: the quantized file must be in the merged model's neighbourhood
    assert abs(math.log(out.ppl_gguf / out.ppl_merged)) < 0.5
    assert out.gguf_bytes < out.intermediate_bytes
    assert out.ppl_degradation_ok == (out.ppl_degradation <= cfg.export.max_ppl_degradation)
    assert out.chat is None and not out.chat_stopped  # no chat messages in this spec
    assert spec.run(tiny_root).reused is True


def test_step_spec_paths_must_stay_under_the_root(tiny_root):
    with pytest.raises(ValueError, match="absolute path"):
        _train_spec(train="/etc/passwd").run(tiny_root)
    with pytest.raises(ValueError, match=r"'\.\.'"):
        _train_spec(train="../outside.jsonl").run(tiny_root)


def test_export_without_a_finished_adapter_says_so(tiny_root):
    spec = ExportGGUFSpec(config=_cfg(), adapter_dir="models/lora/none", val="demo/val.jsonl", out_dir="models/gguf/demo")
    with pytest.raises(FileNotFoundError, match="run train_lora"):
        spec.run(tiny_root)


def test_specs_round_trip_through_their_json_form_by_kind():
    train = _train_spec()
    export = ExportGGUFSpec(config=_cfg(), adapter_dir="models/lora/demo", val="demo/val.jsonl",
                            out_dir="models/gguf/demo", chat_messages=[{"role": "user", "content": "hi"}])
    for spec in (train, export):
        wire = json.loads(json.dumps(spec.model_dump(mode="json")))
        assert parse_spec(wire) == spec
    assert train.inputs() == ["demo/train.jsonl", "demo/val.jsonl", EMBEDDED_BASE_RELDIR]
    assert train.outputs() == ["models/lora/demo"]
    with pytest.raises(ValueError, match="unknown step 'nope'; known steps: ") as err:
        parse_spec({"kind": "nope"})
    # every kind registered in this process, sorted (test modules register their own, e.g. 'concat')
    known = str(err.value).split("known steps: ", 1)[1].split(", ")
    assert {"export_gguf", "train_filter", "train_lora", "train_thyme"} <= set(known) and known == sorted(known)


def test_an_interrupted_lora_run_resumes_from_its_epoch_checkpoint(tiny_root, monkeypatch):
    import distillery_assets.training.lora as lora_module

    class Crash(Exception):
        pass

    def crash_at_step_6(p):
        if p.step == 6:
            raise Crash

    real_loop = lora_module.train_loop
    monkeypatch.setattr(lora_module, "train_loop", lambda *a, **kw: real_loop(*a, **{**kw, "progress": crash_at_step_6}))
    spec = _train_spec()
    with pytest.raises(Crash):
        spec.run(tiny_root)
    checkpoint = tiny_root / "models/lora/.demo.checkpoint"
    assert json.loads((checkpoint / "loop_state.json").read_text())["step"] == 4  # end of epoch 1
    assert not (tiny_root / "models/lora/demo").exists()
    monkeypatch.setattr(lora_module, "train_loop", real_loop)
    done = spec.run(tiny_root)
    assert done.resumed_from_step == 4 and done.steps == 8 and len(done.epochs) == 2
    assert done.val_loss < done.base_val_loss
    assert not checkpoint.exists()
    history = json.loads((tiny_root / "models/lora/demo/training_history.json").read_text())
    assert [s["step"] for s in history["steps"]] == list(range(1, 9))


def test_export_falls_back_in_config_order_keeps_one_file_and_scores_the_held_out_text(tiny_root):
    from distillery_assets.training.perplexity import HeldoutText

    cfg = _cfg(max_steps=2, epochs=1, export=dict(quant="Q4_K_M", fallback_quants=["Q8_0"], max_ppl_degradation=0.0))
    _train_spec(cfg).run(tiny_root)
    text = "The heron stands\nin the shallows and does not\nmove for a long time, and then\nit moves.\n" * 6
    spec = ExportGGUFSpec(config=cfg, adapter_dir="models/lora/demo", val="demo/val.jsonl",
                          out_dir="models/gguf/demo", heldout=HeldoutText(name="heldout.txt", text=text))
    assert spec.outputs() == ["models/gguf/demo"]  # the kept file's name is known only after the run
    out = spec.run(tiny_root)
    assert [a.quant for a in out.quant_attempts][0] == "Q4_K_M" and out.primary_quant == "Q4_K_M"
    first = out.quant_attempts[0]
    if first.within_limit:  # Q4_K_M within a 0% bound: kept, nothing else tried
        assert out.quant == "Q4_K_M" and len(out.quant_attempts) == 1 and not out.fallback_used
    else:  # over the bound: Q8_0 tried; kept is the first within the bound, else the least degraded
        assert sorted(a.quant for a in out.quant_attempts) == ["Q4_K_M", "Q8_0"]
        within = [a for a in out.quant_attempts if a.within_limit]
        expect = within[0] if within else min(out.quant_attempts, key=lambda a: a.ppl_degradation)
        assert out.quant == expect.quant == out.quant_attempts[-1].quant
    assert out.ppl_degradation_ok == (out.ppl_degradation <= 0.0)
    name = f"SmolLM2-135M-Instruct-demo-{out.quant}.gguf"
    assert out.gguf_file == name and out.gguf_path == f"models/gguf/demo/{name}" and out.gguf.file_type == out.quant
    assert sorted(p.name for p in (tiny_root / "models/gguf/demo").iterdir()) == [name, name[:-5] + ".json"]
    sets = {s.name: s for s in out.ppl_sets}
    assert set(sets) == {"validation", "held-out"} and sets["held-out"].source == "heldout.txt"
    assert sets["held-out"].tokens > 50 and out.ppl_tokens == sum(s.tokens for s in out.ppl_sets)
    assert spec.run(tiny_root).reused is True
