"""Theme keyword counting: the seed's per-keyword regex loop vs the Hyperscan counter, same chunks, same run.

Prints MB/s both ways (per CPU-second of this process, i.e. per core, and wall clock), the ratio, and whether every chunk's counts (16 themes + total) agree.
The seed's loop is slow (~0.1 MB/s), so by default it runs on an evenly spaced sample of the chunks
(``--reference-chunks``; 0 = all); the fast counter always runs over every chunk, and its counts are
compared with the reference on every chunk the reference saw.

    python benchmarks/theme_keywords.py [--books-dir data/inputs/gutenberg] [--reference-chunks 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillery_assets.paths import repo_root  # noqa: E402
from distillery_assets.theme import books, chunking, keywords  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books-dir", type=Path, default=repo_root() / "data" / "inputs" / "gutenberg")
    parser.add_argument("--keywords", type=Path, default=repo_root() / "data" / "config" / "theme" / "theme_keywords.json")
    parser.add_argument("--reference-chunks", type=int, default=400, help="chunks for the slow seed loop (0 = all)")
    parser.add_argument("--repeat", type=int, default=3, help="fast-counter repetitions (best time is reported)")
    args = parser.parse_args(argv)

    ids = sorted(int(p.stem[2:]) for p in args.books_dir.glob("pg*.txt") if p.stem[2:].isdigit())
    batch = books.from_local_dir(args.books_dir, books.BookSelection(categories={"all": ids}))
    chunks = [c["text"] for r in batch.records for c in chunking.chunk_book(r)]
    sets = keywords.load_keyword_sets(args.keywords)
    total_mb = sum(len(t.encode("utf-8")) for t in chunks) / 1e6

    counter = keywords.KeywordCounter(sets)
    best_cpu = best_wall = float("inf")
    for _ in range(max(args.repeat, 1)):
        cpu, wall = time.process_time(), time.perf_counter()
        fast = counter.count_many(chunks)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    fast_rate, fast_wall = total_mb / best_cpu, total_mb / best_wall

    step = 1 if args.reference_chunks <= 0 else max(1, len(chunks) // args.reference_chunks)
    sample_idx = list(range(0, len(chunks), step))[: args.reference_chunks or None]
    sample = [chunks[i] for i in sample_idx]
    sample_mb = sum(len(t.encode("utf-8")) for t in sample) / 1e6
    cpu, wall = time.process_time(), time.perf_counter()
    reference = [keywords.count_reference(t, sets) for t in sample]
    ref_rate = sample_mb / (time.process_time() - cpu)
    ref_wall = sample_mb / (time.perf_counter() - wall)
    mismatches = [chunks_i for chunks_i, ref in zip(sample_idx, reference) if fast[chunks_i] != ref]

    print(f"books: {len(batch.records)} ({', '.join(str(r['id']) for r in batch.records)}), chunks: {len(chunks)}, "
          f"{total_mb:.2f} MB; themes: {len(sets)}, keywords: {sum(map(len, sets.values()))}")
    print("rates are MB per CPU-second of this process (per core), wall-clock MB/s in brackets")
    print(f"seed regex loop : {ref_rate:10.3f} MB/s [{ref_wall:.3f}]  ({len(sample)} chunks, {sample_mb:.2f} MB)")
    print(f"hyperscan       : {fast_rate:10.3f} MB/s [{fast_wall:.3f}]  (all {len(chunks)} chunks, best of {args.repeat})")
    print(f"ratio           : {fast_rate / ref_rate:10.1f} x")
    print(f"counts agree    : {not mismatches} ({len(sample) - len(mismatches)}/{len(sample)} chunks identical)")
    return 0 if not mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
