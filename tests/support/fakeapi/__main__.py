"""Run a fake API by hand, or measure the LLM client against one.

    python -m tests.support.fakeapi serve openai --port 8011 --latency 0.2
        then: DISTILLERY_LLM_PROVIDER=openai DISTILLERY_LLM_BASE_URL=http://127.0.0.1:8011/v1 dagster dev ...
    python -m tests.support.fakeapi serve anthropic --port 8012 --batch-latency 20 --batch-fail 0.1 errored
        the Message Batches API too: each batch ends 20 s after it is sent, 10% of the prompts answer ``errored``
        the first time (with DISTILLERY_LLM_BATCH=1 and ANTHROPIC_API_KEY set to anything)
    python -m tests.support.fakeapi throughput --requests 320 --concurrency 32 --latency 0.2
        prints the LLM client's wall time against the ideal (requests / concurrency * latency)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from tests.support.fakeapi import serve_anthropic, serve_fal_queue, serve_openai_compat

SERVERS = {"openai": serve_openai_compat, "anthropic": serve_anthropic, "fal": serve_fal_queue}


def _serve(args) -> None:
    server = SERVERS[args.api](latency_s=args.latency, port=args.port)
    if args.batch_fail:
        from tests.support.fakeapi.replies import fail_first

        server.batch_faults = fail_first(float(args.batch_fail[0]), args.batch_fail[1])
    server.batch_latency_s = args.batch_latency
    with server as srv:
        print(f"{args.api} fake listening at {getattr(srv, 'base_url', srv.origin)} (Ctrl-C to stop)")
        if args.api == "fal":
            print("client env:", srv.client_env())
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _throughput(args) -> None:
    from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client
    from tests.support.llm import answers

    os.environ.setdefault("DISTILLERY_DATA_DIR", tempfile.mkdtemp(prefix="llm-throughput-"))
    with serve_openai_compat(latency_s=args.latency) as srv:
        client = build_client(LLMSettings(provider="openai", base_url=srv.base_url, concurrency=args.concurrency,
                                          api_key_env="DISTILLERY_FAKE_KEY_UNSET"))
        client.complete(LLMRequest(messages=[ChatMessage(role="user", content="warm-up")], max_tokens=32))
        stamp = time.time_ns()
        requests = [LLMRequest(messages=[ChatMessage(role="user", content=f"item {stamp} {i}")], max_tokens=64)
                    for i in range(args.requests)]
        start = time.perf_counter()
        results = answers(client, requests, label="throughput")
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        cached = answers(client, requests, label="throughput")
        cached_s = time.perf_counter() - start
    ideal = args.requests / args.concurrency * args.latency
    print(f"{args.requests} requests, concurrency {args.concurrency}, server latency {args.latency}s: "
          f"{elapsed:.2f}s (ideal {ideal:.2f}s, {ideal / elapsed:.0%} of ideal); ok={sum(r.ok for r in results)}; "
          f"max in flight at the server={srv.max_in_flight}")
    print(f"same batch again: {cached_s:.3f}s, {sum(r.cached for r in cached)} cache hits, "
          f"server calls in total={srv.request_count}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fakeapi")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one fake API until Ctrl-C")
    serve.add_argument("api", choices=sorted(SERVERS))
    serve.add_argument("--latency", type=float, default=0.2)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--batch-latency", type=float, default=5.0, help="seconds until a batch ends (batch APIs)")
    serve.add_argument("--batch-fail", nargs=2, metavar=("SHARE", "OUTCOME"),
                       help="that share of prompts answer OUTCOME (errored, expired, canceled, invalid) the first time")
    serve.set_defaults(func=_serve)
    bench = sub.add_parser("throughput", help="LLM client against the OpenAI fake: wall time vs ideal")
    bench.add_argument("--requests", type=int, default=320)
    bench.add_argument("--concurrency", type=int, default=32)
    bench.add_argument("--latency", type=float, default=0.2)
    bench.set_defaults(func=_throughput)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
