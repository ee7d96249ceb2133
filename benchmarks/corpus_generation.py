"""Corpus generation: the platform against the simplest fast thing a user could write, and the seed's loop.

All three generate the same encyclopedia documents (real prompts from the project's tables) from one local
OpenAI-compatible server (its own process) that answers every request after a fixed latency:

* ``bare async client``: ``openai.AsyncOpenAI`` + ``asyncio.Semaphore(concurrency)`` + ``Path.write_text``;
  no cache, no limits, no retries, no usage rows: the baseline to beat;
* ``platform``: :func:`distillery_assets.corpus.generate.generate_missing` through the LLM client with its
  cache, rate-limit hook, retry policy and usage rows into the DuckDB catalogue, atomic file writes;
* ``sequential, as the seed``: one blocking request at a time (measured on ``--sequential-docs`` documents).

Bare and platform rounds alternate in one run (``--rounds`` each, fresh output folder and empty cache every
round); medians are reported. Then the platform runs twice more: on the finished set (nothing missing) and
after deleting the files (every answer from the cache); both must send zero requests to the server.

    python benchmarks/corpus_generation.py                                   # 256 docs, 200 ms, concurrency 32
    python benchmarks/corpus_generation.py --docs 512 --latency 0.5 --concurrency 128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
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


def bare_async_client(tasks, base_url: str, concurrency: int, root_from: Path, root_to: Path) -> int:
    """What a user would write with the SDK alone: AsyncOpenAI, a semaphore, write each answer."""
    import asyncio

    import openai

    from distillery_assets.corpus.generate import MAX_TOKENS, SYSTEM_PROMPT, TEMPERATURE

    async def run() -> int:
        client = openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(task) -> None:
            async with gate:
                resp = await client.chat.completions.create(
                    model="bench-model", temperature=TEMPERATURE, max_tokens=MAX_TOKENS,
                    messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}])
            target = root_to / task.path.relative_to(root_from)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(resp.choices[0].message.content.strip() + "\n", encoding="utf-8")

        await asyncio.gather(*(one(t) for t in tasks))
        await client.close()
        return len(tasks)

    return asyncio.run(run())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare/platform rounds (median reported)")
    parser.add_argument("--sequential-docs", type=int, default=32, help="documents for the seed's loop (0 = skip)")
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


def _fresh_tasks(work: Path, name: str, docs: int):
    """Scaffold the prompts into a new corpus root and return its first ``docs`` missing documents."""
    from distillery_assets.corpus.layout import CorpusKind
    from distillery_assets.corpus.plan import scan_partition
    from distillery_assets.corpus.prompts import all_leaves, write_leaf
    from distillery_assets.corpus.tables import default_tables

    root = work / name / "corpus"
    for leaf in all_leaves(default_tables()):
        write_leaf(root, leaf)
    tasks = scan_partition(root / CorpusKind.ENCYCLOPEDIA.value).pending[:docs]
    if len(tasks) < docs:
        raise SystemExit(f"only {len(tasks)} prompts available")
    return root, tasks


def _run(args, work: Path) -> int:
    from distillery_assets.catalog import Catalog
    from distillery_assets.corpus.generate import generate_missing
    from distillery_assets.corpus.layout import CorpusKind
    from distillery_assets.corpus.plan import scan_partition
    from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client

    n, lat, conc = args.docs, args.latency, args.concurrency
    catalog = Catalog(work / "data" / "catalog.duckdb")
    bare_s, plat_s, failures, plat_requests = [], [], [], []
    bare_cpu, plat_cpu = [], []  # this process's CPU seconds (all threads): robust to a busy machine
    with server_process(lat) as srv:
        if args.sequential_docs:
            root, tasks = _fresh_tasks(work, "seq", args.sequential_docs)
            t0 = time.perf_counter()
            sequential_like_seed(tasks, srv.base_url, root, work / "seq-out")
            seq_per_doc = (time.perf_counter() - t0) / len(tasks)
        warm_root, warm_tasks = _fresh_tasks(work, "warm", 1)  # SDK import, HTTP pools, catalogue schema: untimed
        bare_async_client(warm_tasks, srv.base_url, conc, warm_root, work / "warm-out")
        for r in range(args.rounds):
            root, tasks = _fresh_tasks(work, f"bare{r}", n)
            t0, c0 = time.perf_counter(), time.process_time()
            bare_async_client(tasks, srv.base_url, conc, root, work / f"bare{r}-out")
            bare_s.append(time.perf_counter() - t0)
            bare_cpu.append(time.process_time() - c0)

            root, tasks = _fresh_tasks(work, f"plat{r}", n)
            settings = LLMSettings(provider="openai", base_url=srv.base_url, model="bench-model", concurrency=conc,
                                   api_key_env="DISTILLERY_BENCH_UNSET_KEY", max_attempts=3)
            os.environ["DISTILLERY_DATA_DIR"] = str(work / f"plat{r}" / "data")  # an empty LLM cache each round
            client = build_client(settings, usage_sink=catalog.record_llm_calls)
            client.complete(LLMRequest(messages=[ChatMessage(role="user", content=f"warm-up {r}")]))
            before = srv.request_count
            t0, c0 = time.perf_counter(), time.process_time()
            report = generate_missing(tasks, client, tag="bench", label="bench")
            plat_s.append(time.perf_counter() - t0)
            plat_cpu.append(time.process_time() - c0)
            client.close()  # as the bare client closes its own
            plat_requests.append(srv.request_count - before)
            failures += [o.reason for o in report.failed]
            last = (root, tasks, settings, report)

        root, tasks, settings, report = last
        encyclopedia = root / CorpusKind.ENCYCLOPEDIA.value
        before = srv.request_count
        t0 = time.perf_counter()
        wanted = {t.path for t in tasks}
        client = build_client(settings, usage_sink=catalog.record_llm_calls)
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

    bare, plat = statistics.median(bare_s), statistics.median(plat_s)
    ideal = n * lat / conc
    rows = catalog.query("select count(*) as n, sum(cached::int) as hits from llm_calls where tag = 'bench'")[0]
    print(f"documents                          {n}  (latency {lat * 1000:.0f} ms, concurrency {conc}, "
          f"{args.rounds} alternating rounds each, medians)")
    print(f"bare AsyncOpenAI + semaphore       {bare:8.3f} s   rounds {', '.join(f'{x:.3f}' for x in bare_s)}")
    print(f"platform (generate_missing)        {plat:8.3f} s   rounds {', '.join(f'{x:.3f}' for x in plat_s)}")
    print(f"platform / bare                    {plat / bare:8.3f}   ({(plat / bare - 1):+.1%}; goal within +5%)")
    print(f"ideal = n * latency / concurrency  {ideal:8.3f} s   efficiency bare {ideal / bare:6.1%}, "
          f"platform {ideal / plat:6.1%}")
    bc, pc = statistics.median(bare_cpu), statistics.median(plat_cpu)
    print(f"client CPU per request             bare {bc / n * 1000:.2f} ms, platform {pc / n * 1000:.2f} ms "
          f"(ratio {pc / bc:.3f}; cache, limits, retries, usage rows and files included)")
    if args.sequential_docs:
        print(f"sequential, as the seed            {seq_per_doc * n:8.2f} s   ({seq_per_doc * 1000:.0f} ms/doc measured on "
              f"{args.sequential_docs} docs)   platform speed-up {seq_per_doc * n / plat:.1f} x")
    print(f"platform requests per round        {plat_requests}   failed {len(failures)}")
    print(f"warm re-run, finished set          {rerun_s:8.2f} s   requests {rerun_requests}   "
          f"generated {len(rerun.generated)}")
    print(f"re-run after deleting the files    {cached_s:8.2f} s   requests {cached_requests}   "
          f"cache hits {sum(o.cached for o in cached.outcomes)}/{n}")
    print(f"catalogue llm_calls rows (bench)   {rows['n']}  (cache hits {rows['hits']})")
    if failures:
        print(f"failures: {failures[:3]}")
    ok = not failures and rerun_requests == 0 and cached_requests == 0 and all(r == n for r in plat_requests)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
