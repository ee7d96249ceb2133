"""Corpus generation: the seed's one-request-at-a-time loop vs the platform, against the same local server.

Both generate the same N encyclopedia documents (real prompts from the project's tables) from a local
OpenAI-compatible server that answers every request after a fixed latency. The seed side posts each prompt
with the standard library and waits for it before sending the next, as ``generate.py`` did; the platform side
is :func:`distillery_assets.corpus.generate.generate_missing` through the LLM client (thread pool, cache,
usage rows into the DuckDB catalogue). Then the platform runs again twice: once on the finished set (nothing
is missing) and once after the generated files were deleted (every answer comes from the LLM cache); both
must send zero requests to the server.

    python benchmarks/corpus_generation.py                   # 256 docs, 200 ms, concurrency 32
    python benchmarks/corpus_generation.py --docs 64 --latency 0.1 --concurrency 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _serve(latency_s: float, conn) -> None:
    from tests.support.fakeapi.openai_compat import serve_openai_compat

    with serve_openai_compat(latency_s=latency_s) as srv:
        conn.send(srv.base_url)
        while conn.recv() == "count":
            conn.send(srv.request_count)


class ServerProcess:
    """The fake OpenAI-compatible server in its own process, as a real provider would be: its request
    handling then does not compete with the client for this process's interpreter lock."""

    def __init__(self, conn, base_url: str):
        self._conn, self.base_url = conn, base_url

    @property
    def request_count(self) -> int:
        self._conn.send("count")
        return self._conn.recv()


@contextlib.contextmanager
def server_process(latency_s: float):
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(latency_s, child), daemon=True)
    proc.start()
    try:
        yield ServerProcess(parent, parent.recv())
    finally:
        parent.send("stop")
        proc.join(10)


def sequential_like_seed(tasks, base_url: str, root_from: Path, root_to: Path) -> None:
    """One blocking HTTP request per document, the next only after the previous answer is written."""
    from distillery_assets.corpus.generate import MAX_TOKENS, SYSTEM_PROMPT, TEMPERATURE

    for task in tasks:
        body = json.dumps({
            "model": "bench-model",
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}],
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
        }).encode()
        req = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            content = json.load(resp)["choices"][0]["message"]["content"].strip()
        target = root_to / task.path.relative_to(root_from)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the platform default")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    os.environ["DISTILLERY_DATA_DIR"] = str(work / "data")
    try:
        return _run(args, work)
    finally:
        if args.keep:
            print(f"working folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> int:

    from distillery_assets.catalog import Catalog
    from distillery_assets.corpus.generate import DEFAULT_CHUNK, generate_missing
    from distillery_assets.corpus.layout import CorpusKind
    from distillery_assets.corpus.plan import scan_partition
    from distillery_assets.corpus.prompts import all_leaves, write_leaf
    from distillery_assets.corpus.tables import default_tables
    from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client

    root = work / "data" / "corpus"
    for leaf in all_leaves(default_tables()):
        write_leaf(root, leaf)
    encyclopedia = root / CorpusKind.ENCYCLOPEDIA.value
    tasks = scan_partition(encyclopedia).pending[: args.docs]
    if len(tasks) < args.docs:
        raise SystemExit(f"only {len(tasks)} prompts available")
    n, lat, conc = len(tasks), args.latency, args.concurrency

    with server_process(lat) as srv:
        t0 = time.perf_counter()
        sequential_like_seed(tasks, srv.base_url, root, work / "sequential")
        seq_s = time.perf_counter() - t0
        seq_requests = srv.request_count

        catalog = Catalog(work / "data" / "catalog.duckdb")
        settings = LLMSettings(provider="openai", base_url=srv.base_url, model="bench-model", concurrency=conc,
                               api_key_env="DISTILLERY_BENCH_UNSET_KEY", max_attempts=1)
        client = build_client(settings, usage_sink=catalog.record_llm_calls)
        t0 = time.perf_counter()  # one-time start-up (SDK import, HTTP client, catalogue schema), not timed below
        client.complete_batch([LLMRequest(messages=[ChatMessage(role="user", content="warm-up")])], label="warm-up")
        warm_s = time.perf_counter() - t0
        start_count = srv.request_count
        t0 = time.perf_counter()
        report = generate_missing(tasks, client, tag="bench", label="bench",
                                  chunk_size=args.chunk_size or DEFAULT_CHUNK)
        plat_s = time.perf_counter() - t0
        plat_requests = srv.request_count - start_count
        failed = [o.reason for o in report.failed]

        before = srv.request_count
        t0 = time.perf_counter()
        wanted = {t.path for t in tasks}
        rerun = generate_missing([t for t in scan_partition(encyclopedia).pending if t.path in wanted], client)
        rerun_s = time.perf_counter() - t0
        rerun_requests = srv.request_count - before

        for o in report.generated:
            o.task.path.unlink()
        before = srv.request_count
        t0 = time.perf_counter()
        cached = generate_missing(tasks, build_client(settings, usage_sink=catalog.record_llm_calls))
        cached_s = time.perf_counter() - t0
        cached_requests = srv.request_count - before

    seq_files = [work / "sequential" / t.path.relative_to(root) for t in tasks]
    both = all(p.exists() for p in seq_files) and all(t.path.exists() for t in tasks)
    same = both and all(p.read_text() == t.path.read_text() for p, t in zip(seq_files, tasks))
    calls = catalog.query("select count(*) as n, sum(cached::int) as hits from llm_calls")[0]
    ideal = n * lat / conc
    print(f"documents                         {n}  (latency {lat * 1000:.0f} ms, concurrency {conc})")
    print(f"sequential, as the seed           {seq_s:8.2f} s   requests {seq_requests}")
    print(f"platform (generate_missing)       {plat_s:8.2f} s   requests {plat_requests}   "
          f"generated {len(report.generated)}   failed {len(failed)}")
    print(f"(platform start-up, untimed        {warm_s:8.2f} s: SDK import, HTTP client, catalogue schema)")
    print(f"speed-up                          {seq_s / plat_s:8.1f} x")
    print(f"ideal = n * latency / concurrency {ideal:8.2f} s   efficiency {ideal / plat_s:6.1%}")
    print(f"warm re-run, finished set         {rerun_s:8.2f} s   requests {rerun_requests}   "
          f"generated {len(rerun.generated)}")
    print(f"re-run after deleting the files   {cached_s:8.2f} s   requests {cached_requests}   "
          f"cache hits {sum(o.cached for o in cached.outcomes)}/{n}")
    print(f"same {n} files both ways          {both}   (identical text: {same})")
    print(f"catalogue llm_calls rows          {calls['n']}  (cache hits {calls['hits']})")
    if failed:
        print(f"failures: {failed[:3]}")
    ok = not failed and rerun_requests == 0 and cached_requests == 0 and both
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
