"""The fake servers themselves: concurrency, scripts, schema-following replies."""

import threading

import httpx
import pytest

from tests.support.fakeapi import schema_example, serve_openai_compat
from tests.support.fakeapi.replies import Script


def test_serves_32_requests_at_once():
    # every reply waits until all 32 requests are inside the server: a serial server would break the barrier
    inside = threading.Barrier(32, timeout=60)

    def reply(messages, body):
        inside.wait()
        return "together"

    with serve_openai_compat(reply=reply) as srv, httpx.Client(timeout=90,
                                                            limits=httpx.Limits(max_connections=64)) as http:
        answers = []

        def worker(i):
            r = http.post(f"{srv.base_url}/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})
            answers.append((r.status_code, r.json()["choices"][0]["message"]["content"]))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == [(200, "together")] * 32 and srv.request_count == 32 and srv.max_in_flight == 32


def test_script_is_consumed_in_order_and_validated():
    with serve_openai_compat(script=[("429", 4), ("500",)]) as srv:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        first = httpx.post(f"{srv.base_url}/chat/completions", json=body)
        second = httpx.post(f"{srv.base_url}/chat/completions", json=body)
        third = httpx.post(f"{srv.base_url}/chat/completions", json=body)
    assert (first.status_code, first.headers["retry-after"]) == (429, "4")
    assert second.status_code == 500 and third.status_code == 200
    assert third.json()["choices"][0]["message"]["content"].startswith("Answer ")
    with pytest.raises(ValueError, match="unknown fault"):
        Script([("teapot",)])


def test_default_replies_are_deterministic_and_schema_examples_validate():
    import jsonschema

    body = {"model": "m", "messages": [{"role": "user", "content": "same"}]}
    with serve_openai_compat() as srv:
        a = httpx.post(f"{srv.base_url}/chat/completions", json=body).json()
        b = httpx.post(f"{srv.base_url}/chat/completions", json=body).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    schema = {"type": "object", "required": ["tags", "level", "ok", "name"], "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "level": {"enum": ["low", "high"]}, "ok": {"type": "boolean"},
        "name": {"type": "string", "minLength": 40}, "score": {"type": "number", "minimum": 0, "maximum": 10}}}
    jsonschema.validate(schema_example(schema, "seed"), schema)
