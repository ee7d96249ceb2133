"""thyme_gguf exports a transformer once: ``export_once`` reuses the record beside the GGUF only when it is the same
model's (fingerprint), the same exporter's (EXPORT_VERSION) and the GGUF is still there; otherwise it exports again
and writes a new record. The exporter itself is replaced here (test_thyme_export runs the real one)."""

import json

import pytest

from distillery_assets.thyme import export as E

GGUF = {"file_type": "Q8_0", "tensor_types": {"Q8_0": 4}, "matrix_tensors": 4, "matrix_tensors_k_quant": 0,
        "architecture": "llama", "has_chat_template": False, "eos_token_id": 3, "eos_token": "<EOS>", "bytes": 10}


def _export(gguf_path, exporter=E.EXPORT_VERSION) -> E.TransformerExport:
    return E.TransformerExport(
        exporter=exporter, gguf_path=str(gguf_path), gguf_bytes=10, sha256="0" * 64, quant="Q8_0", gguf=GGUF,
        tokenizer_model="gpt2", parameters=1, prompt="p", prompt_ids=[2], llama_tokenize_matches=True,
        logits_max_abs_diff=0.0, logits_scale=1.0, top1_agreement=1.0, sample_ids=[], sample_text="",
        sample_stopped=False)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    model, out = tmp_path / "model", tmp_path / "gguf"
    model.mkdir()
    out.mkdir()
    (model / "model.json").write_text(json.dumps({"fingerprint": "fp1"}))
    calls = []

    def fake(model_folder, tokenizer_json, out_dir):
        calls.append(out_dir)
        (out_dir / "m.gguf").write_bytes(b"x" * 10)
        return _export(out_dir / "m.gguf")

    monkeypatch.setattr(E, "export_transformer_gguf", fake)
    return model, out, calls


def test_first_export_writes_a_record_then_the_same_model_is_reused(setup, tmp_path):
    model, out, calls = setup
    result, reused = E.export_once(model, tmp_path / "tokenizer.json", out)
    assert not reused and len(calls) == 1
    record = json.loads((out / E.EXPORT_RECORD).read_text())
    assert record["model_fingerprint"] == "fp1" and record["gguf_path"] == result.gguf_path
    again, reused = E.export_once(model, tmp_path / "tokenizer.json", out)
    assert reused and len(calls) == 1 and again == result


@pytest.mark.parametrize("change", ["fingerprint", "exporter", "gguf_gone", "bad_record"])
def test_a_record_of_another_model_exporter_or_a_missing_file_is_exported_again(setup, tmp_path, change):
    model, out, calls = setup
    E.export_once(model, tmp_path / "tokenizer.json", out)
    record = json.loads((out / E.EXPORT_RECORD).read_text())
    if change == "fingerprint":
        (model / "model.json").write_text(json.dumps({"fingerprint": "fp2"}))
    elif change == "exporter":
        (out / E.EXPORT_RECORD).write_text(json.dumps({**record, "exporter": E.EXPORT_VERSION - 1}))
    elif change == "gguf_gone":
        (out / "m.gguf").unlink()
    else:
        (out / E.EXPORT_RECORD).write_text(json.dumps({"model_fingerprint": "fp1", "gguf_path": 3}))
    _, reused = E.export_once(model, tmp_path / "tokenizer.json", out)
    assert not reused and len(calls) == 2
    assert json.loads((out / E.EXPORT_RECORD).read_text())["model_fingerprint"] == json.loads(
        (model / "model.json").read_text())["fingerprint"]
