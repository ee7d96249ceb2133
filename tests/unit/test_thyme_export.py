"""The thyme transformer exports to GGUF through the project's path and runs in llama.cpp: a tiny Llama trained
here for a few steps on a tokenizer made here converts (thyme's Whitespace BPE, its
vocabulary written in llama.cpp's byte-level form), llama.cpp tokenizes a prompt with curly quotes and
accents as the HF tokenizer does and gives each token the same text, its logits on the prompt
agree with the torch model's, and it continues the prompt.

Tolerances (against the fp32 torch model, as fractions of the largest |logit| on the prompt): F16 rounds each
weight to 2^-11 relative (about 5e-4); measured here about 1e-3 on logits of size ~5 (0.02%), so 1% is a wide
margin that still fails for a wrong tensor layout, a missing norm or a swapped rope (differences of the logits'
own size). Q8_0 rounds each block of 32 weights to 1/127 of its largest magnitude (~0.4% relative, an order of
magnitude coarser); measured about 1% of the scale, bound 5%. Top-1 agreement on the prompt positions: all of
them for F16, most for Q8_0 (the few steps of training give a clear top-1, not a random model's near-ties).
"""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from distillery_assets.thyme.experiments import LlamaArchitecture  # noqa: E402
from distillery_assets.thyme.export import EXPORT_VERSION, export_transformer_gguf  # noqa: E402
from distillery_assets.thyme.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, save_tokenizer, train_bpe  # noqa: E402
from distillery_assets.thyme.train import MODEL_FILE, WEIGHTS_FILE, build_model  # noqa: E402

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering "
        "a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. Call me Ishmael. It was the "
        "best of times, it was the worst of times. The night was dark. She looked at him. “Don’t,” said the "
        "fiancée at the café; “it’s déjà vu.”")
ARCH = LlamaArchitecture(architecture="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("thyme-export")
    tok = train_bpe([TEXT] * 20, vocab_size=300)
    tok_path = save_tokenizer(tok, root)
    ids = [BOS_ID, *tok.encode(TEXT).ids, EOS_ID]
    torch.manual_seed(0)
    model = build_model(ARCH, tok.get_vocab_size())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.tensor([ids[:65], ids[20:85]])
    for _ in range(30):  # a few steps: logits with a clear top-1, not a random model's near-ties
        loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    folder = root / "transformer"
    folder.mkdir()
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    (folder / MODEL_FILE).write_text(json.dumps({"architecture": "llama", "config": ARCH.model_dump(exclude={"training"}),
                                                 "vocab_size": tok.get_vocab_size()}))
    return root, folder, tok_path, loss.item()


@pytest.mark.parametrize("quant,tol,top1", [("F16", 0.01, 1.0), ("Q8_0", 0.05, 0.8)])
def test_export_loads_in_llama_cpp_and_matches_torch(trained, quant, tol, top1):
    root, folder, tok_path, loss = trained
    out = root / f"out-{quant}"
    res = export_transformer_gguf(folder, tok_path, out, quant=quant, prompt="“It was the best of times,” said the fiancée",
                                  max_new_tokens=12, seed=1)
    print(quant, res.logits_max_abs_diff, res.logits_scale, res.top1_agreement, loss, res.sample_text)
    assert res.exporter == EXPORT_VERSION
    assert res.quant == quant and res.gguf.file_type == ("F16" if quant == "F16" else "Q8_0")
    assert res.tokenizer_model == "gpt2" and res.gguf.architecture == "llama"
    assert res.gguf.eos_token_id == EOS_ID
    assert [p.name for p in out.iterdir()] == [f"transformer-{quant}.gguf"]  # no temporary left behind
    assert res.gguf_bytes == (out / f"transformer-{quant}.gguf").stat().st_size and len(res.sha256) == 64
    assert res.prompt_ids[0] == BOS_ID and res.llama_tokenize_matches and res.llama_pieces_match
    assert res.adds_bos
    assert UNK_ID not in res.prompt_ids  # the curly quotes and accents are in the vocabulary, not <UNK>
    assert res.logits_max_abs_diff < tol * res.logits_scale
    assert res.top1_agreement >= top1
    assert res.sample_ids and all(0 <= t < 300 for t in res.sample_ids) and PAD_ID not in res.sample_ids[:-1]
    assert res.sample_text.strip() and "UNK_BYTE" not in res.sample_text  # llama.cpp decodes every token


def test_thyme_architecture_is_refused(tmp_path):
    folder = tmp_path / "thyme"
    folder.mkdir()
    (folder / MODEL_FILE).write_text(json.dumps({"architecture": "thyme"}))
    with pytest.raises(ValueError, match="no GGUF form"):
        export_transformer_gguf(folder, tmp_path / "tokenizer.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
