"""A fake Anthropic Messages API: POST /v1/messages (non-streaming), errors in Anthropic's shape, and the Message
Batches API (create, list -- newest first, ``limit`` (default 20, at most 1000), ``after_id`` / ``before_id``, a
page with ``has_more``, ``first_id``, ``last_id`` --, retrieve, results JSONL at ``results_url``;
``batch_latency_s``, ``batch_faults``, ``lose_batch_replies`` and the submission counters of
``server.FakeAPIServer``).

A ("finish", reason) fault answers half the text with that ``stop_reason`` (None: null); "tool_use" adds a
tool_use block after the text."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from tests.support.fakeapi.replies import BatchFaults, Reply, approx_tokens, cut_to_budget, reply_text, unfinished
from tests.support.fakeapi.server import FakeAPIServer, Handler


def _error(handler: Handler, status: int, kind: str, message: str, headers: dict | None = None) -> None:
    handler.send_json(status, {"type": "error", "error": {"type": kind, "message": message}}, headers=headers)


# What structured outputs accept (the keywords anthropic.transform_schema keeps; it folds every other one into
# the description): any other keyword, an object without additionalProperties: false, or minItems other than 0/1
# is refused with a 400, as the API refuses it.
_SCHEMA_KEYS = {"type", "anyOf", "allOf", "enum", "const", "description", "title", "$ref", "$defs", "properties",
                "additionalProperties", "required", "items", "minItems", "format"}
_STRING_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}


def schema_problem(schema: Any, where: str = "schema") -> str | None:
    """Why the Messages API would refuse ``schema`` as ``output_config.format.schema`` (None: accepted)."""
    if not isinstance(schema, dict):
        return f"{where}: must be an object"
    for key in schema:
        if key not in _SCHEMA_KEYS:
            return f"{where}: property '{key}' is not supported"
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        return f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false"
    if "minItems" in schema and schema["minItems"] not in (0, 1):
        return f"{where}: For 'array' type, 'minItems' values other than 0 or 1 are not supported"
    if "format" in schema and schema["format"] not in _STRING_FORMATS:
        return f"{where}: string format '{schema['format']}' is not supported"
    children = [(f"{where}.properties.{k}", v) for k, v in (schema.get("properties") or {}).items()]
    children += [(f"{where}.$defs.{k}", v) for k, v in (schema.get("$defs") or {}).items()]
    children += [(f"{where}.{k}[{i}]", v) for k in ("anyOf", "allOf") for i, v in enumerate(schema.get(k) or [])]
    if isinstance(schema.get("items"), dict):
        children.append((f"{where}.items", schema["items"]))
    for path, child in children:
        if (problem := schema_problem(child, path)) is not None:
            return problem
    return None


def _refusal(headers, body: dict[str, Any]) -> tuple[int, str, str] | None:
    """(status, error type, message) of the API's refusal of a Messages body, or None when it is accepted."""
    for name in ("temperature", "top_p", "top_k"):  # API version 2026-10-21 rejects sampling parameters
        if name in body and (headers.get("anthropic-version") or "") >= "2026-10-21":
            return 400, "invalid_request_error", f"{name}: Extra inputs are not permitted"
    if "max_tokens" not in body:
        return 400, "invalid_request_error", "max_tokens: Field required"
    if any(m.get("role") == "system" for m in body.get("messages", [])):
        return 400, "invalid_request_error", "messages: Unexpected role \"system\". Use the top-level system parameter"
    output_format = (body.get("output_config") or {}).get("format")
    if output_format is not None and (problem := schema_problem(output_format.get("schema"))) is not None:
        return 400, "invalid_request_error", f"output_config.format.{problem}"
    return None


def _message(fake: FakeAPIServer, body: dict[str, Any], kind: str | None, fault: tuple | None) -> dict[str, Any]:
    """The Message the fake answers ``body`` with (online, or as a batch item's result)."""
    messages = list(body.get("messages") or [])
    if body.get("system"):
        messages = [{"role": "system", "content": body["system"]}] + messages
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    text, cut = cut_to_budget(kind, reply_text(kind, fake.reply, messages, body, schema), int(body["max_tokens"]))
    stop = "max_tokens" if cut else "end_turn"
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if (odd := unfinished(fault, text)) is not None:
        stop, text = odd
        content = [{"type": "text", "text": text}]
        if stop == "tool_use":
            content.append({"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}})
    return {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
            "model": body.get("model") or fake.model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": sum(approx_tokens(str(m.get("content", ""))) for m in messages),
                      "output_tokens": approx_tokens(text)}}


def _authorized(handler: Handler) -> bool:
    return bool(handler.headers.get("x-api-key") or (handler.headers.get("Authorization") or "").startswith("Bearer "))


def _messages(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if not _authorized(handler):
        return _error(handler, 401, "authentication_error", "x-api-key or Authorization: Bearer is required")
    if (refusal := _refusal(handler.headers, body)) is not None:
        return _error(handler, *refusal)
    fault = fake.begin_call()
    try:
        kind = fake.wait_for(fault)
        if kind == "429":
            return _error(handler, 429, "rate_limit_error", "Number of requests has exceeded your rate limit",
                          headers={"retry-after": str(fault[1]) if len(fault) > 1 else "1"})
        if kind == "500":
            return _error(handler, 500, "api_error", "Internal server error")
        if kind == "garbage":
            return handler.send_raw(200, b"<html>502 Bad Gateway</html>", "application/json")
        fake.count_submission(body)
        handler.send_json(200, _message(fake, body, kind, fault))
    finally:
        fake.end_call()


# -- Message Batches: POST /v1/messages/batches, GET .../<id>, GET .../<id>/results ---------------------------------
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_BATCH = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_]+)(/results)?/?$")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")


def _batch_create(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    if not _authorized(handler):
        return _error(handler, 401, "authentication_error", "x-api-key or Authorization: Bearer is required")
    requests = req["body"].get("requests")
    if not isinstance(requests, list) or not requests:
        return _error(handler, 400, "invalid_request_error", "requests: Field required (a non-empty list)")
    if len(requests) > MAX_BATCH_REQUESTS:
        return _error(handler, 400, "invalid_request_error",
                      f"requests: a batch holds at most {MAX_BATCH_REQUESTS} requests, got {len(requests)}")
    if len(json.dumps(req["body"]).encode("utf-8")) > MAX_BATCH_BYTES:
        return _error(handler, 413, "request_too_large", "the batch is larger than 256 MB")
    seen: set[str] = set()
    for i, item in enumerate(requests):
        cid = item.get("custom_id")
        if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
            return _error(handler, 400, "invalid_request_error",
                          f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if cid in seen:
            return _error(handler, 400, "invalid_request_error", f"requests.{i}.custom_id: duplicate custom_id {cid}")
        if not isinstance(item.get("params"), dict):
            return _error(handler, 400, "invalid_request_error", f"requests.{i}.params: Field required")
        seen.add(cid)
    bid = f"msgbatch_{uuid.uuid4().hex[:24]}"
    record = {"id": bid, "created": time.monotonic(), "created_at": time.time(), "requests": requests,
              "version": handler.headers.get("anthropic-version") or "", "results": None}
    record["submission"] = {item["custom_id"]: fake.count_submission(item["params"], item["custom_id"])
                            for item in requests}
    with fake._lock:
        fake.batches[bid] = record
    if fake.lose_reply(handler, bid):
        return
    handler.send_json(200, _batch_json(fake, record))


def _batch_list(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    if not _authorized(handler):
        return _error(handler, 401, "authentication_error", "x-api-key or Authorization: Bearer is required")
    query = req.get("query") or {}
    if query.get("before_id") and query.get("after_id"):
        return _error(handler, 400, "invalid_request_error", "before_id and after_id cannot both be given")
    with fake._lock:
        records = list(reversed(fake.batches.values()))  # newest first
    page, more = fake.list_page(records, query, default_limit=20, max_limit=1000, cursor="after_id")
    data = [_batch_json(fake, r) for r in page]
    handler.send_json(200, {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                            "last_id": data[-1]["id"] if data else None})


def _results(fake: FakeAPIServer, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each request's result line, made once, when the batch ends (in a shuffled order, as the API says it may)."""
    if record["results"] is None:
        lines = []
        for item in record["requests"]:
            cid, params = item["custom_id"], item["params"]
            outcome = fake.batch_fault(item, record["submission"][cid])
            if outcome in ("expired", "canceled"):
                result: dict[str, Any] = {"type": outcome}
            elif outcome == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error (injected)"}}}
            elif outcome == "invalid":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "messages.0.content: invalid (injected)"}}}
            elif (refusal := _refusal({"anthropic-version": record["version"]}, params)) is not None:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": refusal[1], "message": refusal[2]}}}
            else:
                result = {"type": "succeeded", "message": _message(fake, params, None, None)}
            lines.append({"custom_id": cid, "result": result})
        lines.sort(key=lambda line: line["custom_id"])
        record["results"] = lines
    return record["results"]


def _batch_json(fake: FakeAPIServer, record: dict[str, Any]) -> dict[str, Any]:
    ended = fake.batch_ended(record)
    counts = {"processing": 0 if ended else len(record["requests"]), "succeeded": 0, "errored": 0, "canceled": 0,
              "expired": 0}
    if ended:
        for line in _results(fake, record):
            counts[line["result"]["type"]] += 1
    return {"id": record["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": _iso(record["created_at"]),
            "expires_at": _iso(record["created_at"] + 86400), "ended_at": _iso(time.time()) if ended else None,
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{fake.origin}/v1/messages/batches/{record['id']}/results" if ended else None}


def _batch_get(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    if not _authorized(handler):
        return _error(handler, 401, "authentication_error", "x-api-key or Authorization: Bearer is required")
    match = _BATCH.match(req["path"])
    with fake._lock:
        record = fake.batches.get(match.group(1))
    if record is None:
        return _error(handler, 404, "not_found_error", f"batch {match.group(1)} not found")
    if not match.group(2):
        return handler.send_json(200, _batch_json(fake, record))
    if not fake.batch_ended(record):
        return _error(handler, 400, "invalid_request_error", "the batch is still processing: no results yet")
    data = "".join(json.dumps(line) + "\n" for line in _results(fake, record)).encode("utf-8")
    handler.send_raw(200, data, "application/binary")


class AnthropicServer(FakeAPIServer):
    def __init__(self, **kwargs):
        super().__init__({("POST", lambda p: p.rstrip("/") == "/v1/messages"): _messages,
                          ("POST", lambda p: p.rstrip("/") == "/v1/messages/batches"): _batch_create,
                          ("GET", lambda p: p.rstrip("/") == "/v1/messages/batches"): _batch_list,
                          ("GET", lambda p: bool(_BATCH.match(p))): _batch_get}, **kwargs)

    @property
    def base_url(self) -> str:
        """What to pass as the Anthropic SDK's ``base_url`` (it appends /v1/messages)."""
        return self.origin


def serve_anthropic(*, latency_s: float = 0.0, reply: Reply | None = None, script: list | None = None,
                    model: str = "claude-sonnet-5-5", tls: bool = False, port: int = 0,
                    batch_latency_s: float = 0.0, batch_faults: BatchFaults | None = None) -> AnthropicServer:
    server = AnthropicServer(latency_s=latency_s, reply=reply, script=script, tls=tls, port=port, model=model)
    server.batch_latency_s, server.batch_faults = batch_latency_s, batch_faults
    return server
