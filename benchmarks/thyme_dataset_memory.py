"""Peak memory of building a thyme dataset: the project's streamed build (``dataset.build_dataset``: chunks spooled
to a scratch file, read back in the seed's shuffled order) against the seed's simple way (join every document into
one string, chunk it into a list, shuffle the list, encode it), on the eight shipped books repeated ``--copies``
times with corpus-seed's chunking (1,000 characters, chunks over 100, 5% validation, window 256).

Each form runs in its own process, so its peak RSS is its own; both use one tokenizer trained beforehand on the
books, and the benchmark checks that both wrote the same token and window files.

Then the 3-gram baseline of ``thyme_eval`` is counted on the streamed dataset's training split twice, each in its own
process: block by block (``evaluate.NGram``'s default, 4M tokens a block, the memory-mapped token file read one
block at a time) and in one pass over the whole split (what the counting did before); the two must give the same
tables.

    .venv/bin/python benchmarks/thyme_dataset_memory.py            # 40 copies, ~190 MB of text
    .venv/bin/python benchmarks/thyme_dataset_memory.py --copies 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distillery_assets.io.hashing import new_sha256, sha256_file  # noqa: E402
from distillery_assets.paths import inputs_dir  # noqa: E402

FILES = ("train.tokens.bin", "train.windows.npy", "val.tokens.bin", "val.windows.npy")


def _texts(copies: int):
    books = sorted((inputs_dir() / "thyme_books").glob("*.txt"))
    for copy in range(copies):
        for book in books:
            yield f"copy {copy}\n\n" + book.read_text(encoding="utf-8")


def _streamed(copies: int, out: Path, tokenizer: Path) -> dict:
    from distillery_assets.thyme.dataset import build_dataset
    from distillery_assets.thyme.experiments import load_experiment

    ds = build_dataset(_texts(copies), load_experiment("corpus-seed"), out, tokenizer=tokenizer)
    return {"chunks": ds.info["chunks"], "tokens": ds.info["train"]["tokens"] + ds.info["val"]["tokens"]}


def _in_memory(copies: int, out: Path, tokenizer: Path) -> dict:
    """The seed's way: one joined string, a list of chunks, the list shuffled, each split encoded from lists."""
    import numpy as np

    from distillery_assets.thyme.dataset import chunk_text, seed_windows, split_chunks, token_dtype
    from distillery_assets.thyme.experiments import load_experiment
    from distillery_assets.thyme.tokenizer import encode_chunks, load_tokenizer

    recipe = load_experiment("corpus-seed").dataset
    chunks = chunk_text("\n\n".join(_texts(copies)), recipe.chunk_chars, recipe.min_chunk_chars)
    train, val = split_chunks(chunks, recipe.val_fraction, recipe.split_seed)
    tok = load_tokenizer(tokenizer)
    dtype = token_dtype(tok.get_vocab_size())
    out.mkdir(parents=True)
    total = 0
    for name, part in (("train", train), ("val", val)):
        ids = [np.asarray(a, dtype=dtype) for a in encode_chunks(tok, part)]
        windows, offset = [], 0
        for arr in ids:
            windows.extend((offset + s, offset + e) for s, e in
                           seed_windows(len(arr), recipe.window, recipe.window_stride, recipe.min_window_tokens))
            offset += len(arr)
        np.concatenate(ids).tofile(out / f"{name}.tokens.bin")
        np.save(out / f"{name}.windows.npy", np.asarray(windows, dtype=np.int64).reshape(-1, 2))
        total += offset
    return {"chunks": len(chunks), "tokens": total}


def _peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM: per address space, so unlike ``ru_maxrss`` not inherited from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ngram(block_tokens: int, folder: Path) -> dict:
    import numpy as np

    from distillery_assets.thyme.dataset import open_dataset
    from distillery_assets.thyme.evaluate import NGram

    ds = open_dataset(folder)
    model = NGram(ds.train, ds.vocab_size, order=3, block_tokens=block_tokens)
    digest = new_sha256(model.unigram.tobytes())
    for table in model.tables:
        for array in table:
            digest.update(np.ascontiguousarray(array).tobytes())
    return {"tokens": ds.train.scored_tokens, "trigrams": len(model.tables[-1][0]), "sha256": digest.hexdigest()}


def _child(form: str, copies: int, out: str, tokenizer: str) -> None:
    t = time.perf_counter()
    if form.startswith("ngram:"):
        result = _ngram(int(form.split(":")[1]), Path(out))
    else:
        result = {"streamed": _streamed, "in_memory": _in_memory}[form](copies, Path(out), Path(tokenizer))
    result.update(seconds=time.perf_counter() - t,
                  peak_rss_mib=_peak_rss_mib())
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=40, help="times the eight books are repeated (default 40)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        form, copies, out, tokenizer = args.child
        _child(form, int(copies), out, tokenizer)
        return

    from distillery_assets.thyme.tokenizer import TOKENIZER_FILE, save_tokenizer, train_bpe

    text_mb = sum(len(t.encode("utf-8")) for t in _texts(1)) * args.copies / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_tokenizer(train_bpe(_texts(1), 32000, 2), tmp / "tok")
        idle = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                               "import benchmarks.thyme_dataset_memory as b, distillery_assets.thyme.dataset, "
                               "distillery_assets.thyme.tokenizer; print(b._peak_rss_mib())", str(ROOT)],
                              check=True, capture_output=True, text=True, cwd=ROOT)
        rows = {}
        for form in ("in_memory", "streamed"):
            proc = subprocess.run([sys.executable, __file__, "--child", form, str(args.copies), str(tmp / form),
                                   str(tmp / "tok" / TOKENIZER_FILE)], check=True, capture_output=True, text=True)
            rows[form] = json.loads(proc.stdout.strip().splitlines()[-1])
        same = all(sha256_file(tmp / "in_memory" / f) == sha256_file(tmp / "streamed" / f) for f in FILES)
        counts = {}
        for label, block in (("one pass", 1 << 62), ("blocks", 1 << 22)):
            proc = subprocess.run([sys.executable, __file__, "--child", f"ngram:{block}", str(args.copies),
                                   str(tmp / "streamed"), "-"], check=True, capture_output=True, text=True)
            counts[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.copies} copies of the eight books: {text_mb:,.0f} MB of text, {rows['streamed']['chunks']:,} chunks, "
          f"{rows['streamed']['tokens']:,} tokens (imports alone: {float(idle.stdout):.0f} MiB)")
    print(f"{'form':<10} {'peak RSS MiB':>13} {'seconds':>8}")
    for form, row in rows.items():
        print(f"{form:<10} {row['peak_rss_mib']:>13,.0f} {row['seconds']:>8.1f}")
    print(f"streamed / in memory peak RSS: {rows['streamed']['peak_rss_mib'] / rows['in_memory']['peak_rss_mib']:.2f}; "
          f"token and window files {'identical' if same else 'DIFFERENT'}")
    one, blocks = counts["one pass"], counts["blocks"]
    print(f"3-gram counts of the training split ({one['tokens']:,} tokens, {one['trigrams']:,} distinct 3-grams):")
    print(f"{'counting':<10} {'peak RSS MiB':>13} {'seconds':>8}")
    for label, row in counts.items():
        print(f"{label:<10} {row['peak_rss_mib']:>13,.0f} {row['seconds']:>8.1f}")
    counts_same = one["sha256"] == blocks["sha256"]
    print(f"blocks / one pass peak RSS: {blocks['peak_rss_mib'] / one['peak_rss_mib']:.2f}; "
          f"tables {'identical' if counts_same else 'DIFFERENT'}")
    if not (same and counts_same):
        sys.exit(1)


if __name__ == "__main__":
    main()
