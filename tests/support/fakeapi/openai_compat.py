"""A fake OpenAI-compatible server: POST /v1/chat/completions (JSON or SSE stream), GET /v1/models.

``json_schema_supported=False`` makes it refuse ``response_format: json_schema`` with a 400, as some
OpenAI-compatible servers do (``json_schema_refusal_status=500`` answers as llama-cpp-python's server does), so the client's fallback to ``json_object`` can be exercised.
``token_delay_s`` spaces streamed tokens (time-to-first-token = latency_s).
Reasoning models (o1/o3/o4, gpt-5.x, gpt-6.x, and the names in ``reasoning_models``) refuse ``max_tokens`` and
a ``temperature`` other than 1 with OpenAI's 400 (``unsupported_parameter`` / ``unsupported_value``).
A ("finish", reason) fault answers half the text with that ``finish_reason`` (None: null); "tool_calls" answers
a tool call instead of text, "refusal" a structured-output refusal (``message.refusal``, finish_reason "stop",
as OpenAI sends it).
The Files and Batch APIs: a JSONL upload with purpose ``batch``, ``POST /v1/batches`` for ``/v1/chat/completions``
(window ``24h``; a malformed line, a duplicate custom_id or more than 50,000 lines make the batch ``failed`` with
its errors), ``GET /v1/batches/<id>``, ``GET /v1/batches`` (newest first, ``limit`` 1-100, default 20, ``after``; a page
with ``has_more``, ``first_id``, ``last_id``), and the output and error files once it completes (``batch_latency_s``,
``batch_faults`` -- ``expired`` items come back as ``batch_expired`` errors --, ``lose_batch_replies`` and the
submission counters of
``server.FakeAPIServer``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from tests.support.fakeapi.replies import (BatchFaults, Reply, approx_tokens, cut_to_budget, reply_text,
                                           schema_from_prompt, unfinished)
from tests.support.fakeapi.server import FakeAPIServer, Handler


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    if fmt.get("type") == "json_object":
        return fmt.get("schema") or schema_from_prompt(body.get("messages") or []) or {"type": "object"}
    return None


_REASONING = re.compile(r"^(?:o\d+(?:-|$)|gpt-5|gpt-6)")


def _parameter_refusal(fake: FakeAPIServer, body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 for what a reasoning model (o1/o3/o4, gpt-5.x, gpt-6.x, or a name in
    ``fake.reasoning_models``) refuses: ``max_tokens``, and a temperature other than the default 1."""
    model = str(body.get("model") or "")
    if not (_REASONING.match(model) or model in getattr(fake, "reasoning_models", ())):
        return None
    if "max_tokens" in body:
        return {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                           "'max_completion_tokens' instead.", "type": "invalid_request_error",
                "param": "max_tokens", "code": "unsupported_parameter"}
    if body.get("temperature") not in (None, 1, 1.0) and "-chat" not in model:
        return {"message": f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                           "model. Only the default (1) value is supported.", "type": "invalid_request_error",
                "param": "temperature", "code": "unsupported_value"}
    return None


def _body_refusal(fake: FakeAPIServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(status, error) of the server's refusal of a chat completions body, or None when it is accepted."""
    if (refusal := _parameter_refusal(fake, body)) is not None:
        return 400, refusal
    fmt_type = (body.get("response_format") or {}).get("type")
    if fmt_type == "json_schema" and not getattr(fake, "json_schema_supported", True):
        return getattr(fake, "json_schema_refusal_status", 400), {
            "message": "response_format type 'json_schema' is not supported by this server",
            "type": "invalid_request_error", "param": "response_format", "code": None}
    return None


def _completion(fake: FakeAPIServer, body: dict[str, Any], kind: str | None, fault: tuple | None
                ) -> tuple[str, str, str, dict[str, Any], dict[str, Any]]:
    """(id, model, finish, message, usage) of the fake's answer to ``body`` (online, or a batch line's)."""
    messages = body.get("messages") or []
    schema = _schema(body)
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30)
    text, cut = cut_to_budget(kind, reply_text(kind, fake.reply, messages, body, schema), max_tokens)
    finish = "length" if cut else "stop"
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if (odd := unfinished(fault, text)) is not None:
        finish, text = odd
        message["content"] = text
        if finish == "tool_calls":
            message["content"] = None
            message["tool_calls"] = [{"id": "call_1", "type": "function",
                                      "function": {"name": "lookup", "arguments": "{}"}}]
        elif finish == "refusal":
            message["content"], message["refusal"], finish = None, "I can't help with that.", "stop"
    usage = {"prompt_tokens": sum(approx_tokens(str(m.get("content", ""))) for m in messages),
             "completion_tokens": approx_tokens(text)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return f"chatcmpl-{uuid.uuid4().hex[:12]}", body.get("model") or fake.model, finish, message, usage


def _completion_json(ident: str, model: str, finish: str, message: dict[str, Any], usage: dict[str, Any]) -> dict:
    return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}], "usage": usage}


def _chat(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if (refusal := _body_refusal(fake, body)) is not None:
        return handler.send_json(refusal[0], {"error": refusal[1]})
    fault = fake.begin_call()
    try:
        kind = fake.wait_for(fault)
        if kind == "429":
            retry_after = str(fault[1]) if len(fault) > 1 else "1"
            return handler.send_json(429, {"error": {"message": "Rate limit reached, slow down",
                                                     "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}},
                                     headers={"Retry-After": retry_after})
        if kind == "500":
            return handler.send_json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
        if kind == "garbage":
            return handler.send_raw(200, b"<html>502 Bad Gateway</html>", "application/json")
        fake.count_submission(body)
        ident, model, finish, message, usage = _completion(fake, body, kind, fault)
        if body.get("stream"):
            return _stream(fake, handler, ident, model, message.get("content") or "", finish, usage)
        handler.send_json(200, _completion_json(ident, model, finish, message, usage))
    finally:
        fake.end_call()


# -- Files and Batch API: POST /v1/files, GET /v1/files/<id>/content, POST /v1/batches, GET /v1/batches/<id> ---------
MAX_BATCH_REQUESTS = 50_000
MAX_BATCH_BYTES = 200 * 1024 * 1024
_FILE = re.compile(r"^/v1/files/(file-[0-9a-f]+)/content/?$")
_BATCH = re.compile(r"^/v1/batches/(batch_[0-9a-f]+)/?$")


def _error(handler: Handler, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
    handler.send_json(status, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                         "code": code}})


def _new_file(fake: FakeAPIServer, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
    fid = f"file-{uuid.uuid4().hex[:24]}"
    record = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": filename,
              "purpose": purpose, "status": "processed", "status_details": None, "expires_at": None}
    with fake._lock:
        fake.files[fid] = (record, data)
    return record


def _file_upload(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if "files" not in body or "file" not in body["files"]:
        return _error(handler, 400, "'file' is a required property (a multipart upload)", param="file")
    purpose = body["fields"].get("purpose")
    if purpose not in ("assistants", "batch", "fine-tune", "vision", "user_data", "evals"):
        return _error(handler, 400, f"'{purpose}' is not one of the valid purposes", param="purpose")
    filename, data = body["files"]["file"]
    if purpose == "batch" and len(data) > MAX_BATCH_BYTES:
        return _error(handler, 400, "a batch input file may be up to 200 MB", param="file")
    handler.send_json(200, _new_file(fake, data, filename, purpose))


def _file_content(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    fid = _FILE.match(req["path"]).group(1)
    with fake._lock:
        found = fake.files.get(fid)
    if found is None:
        return _error(handler, 404, f"No such File object: {fid}", param="id")
    handler.send_raw(200, found[1], "application/octet-stream")


def _batch_create(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if body.get("completion_window") != "24h":
        return _error(handler, 400, "completion_window: only '24h' is supported", param="completion_window")
    if body.get("endpoint") != "/v1/chat/completions":
        return _error(handler, 400, f"endpoint {body.get('endpoint')!r} is not served here", param="endpoint")
    with fake._lock:
        found = fake.files.get(body.get("input_file_id") or "")
    if found is None or found[0]["purpose"] != "batch":
        return _error(handler, 400, f"input_file_id {body.get('input_file_id')!r}: no file with purpose 'batch'",
                      param="input_file_id")
    bid = f"batch_{uuid.uuid4().hex[:24]}"
    errors, lines = [], []
    for number, raw in enumerate(found[1].decode("utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                           "param": None, "line": number})
            continue
        if line.get("url") != body["endpoint"] or line.get("method") != "POST" or "custom_id" not in line:
            errors.append({"code": "invalid_request", "message": "each line needs custom_id, method POST and the "
                           "batch's url", "param": None, "line": number})
        lines.append(line)
    ids = [line.get("custom_id") for line in lines]
    if len(set(ids)) != len(ids):
        errors.append({"code": "duplicate_custom_id", "message": "The custom_id for each request must be unique.",
                       "param": None, "line": None})
    if len(lines) > MAX_BATCH_REQUESTS:
        errors.append({"code": "too_many_requests", "message": f"at most {MAX_BATCH_REQUESTS} requests per batch",
                       "param": None, "line": None})
    record = {"id": bid, "created": time.monotonic(), "created_at": int(time.time()), "lines": lines,
              "input_file_id": body["input_file_id"], "metadata": body.get("metadata"), "errors": errors,
              "output_file_id": None, "error_file_id": None, "counts": None, "submission": {}}
    if not errors:
        for line in lines:
            record["submission"][line["custom_id"]] = fake.count_submission(line.get("body") or {}, line["custom_id"])
    with fake._lock:
        fake.batches[bid] = record
    if fake.lose_reply(handler, bid):
        return
    handler.send_json(200, _batch_json(fake, record))


def _batch_list(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    query = req.get("query") or {}
    limit = query.get("limit")
    if limit is not None and not (limit.isdigit() and 1 <= int(limit) <= 100):
        return _error(handler, 400, f"Invalid 'limit': {limit}; it must be between 1 and 100", param="limit")
    with fake._lock:
        records = list(reversed(fake.batches.values()))  # newest first
    page, more = fake.list_page(records, query, default_limit=20, max_limit=100, cursor="after")
    data = [_batch_json(fake, r) for r in page]
    handler.send_json(200, {"object": "list", "data": data, "has_more": more,
                            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


def _finish_batch(fake: FakeAPIServer, record: dict[str, Any]) -> None:
    """Answer every line once the batch ends: the output file, and the error file for the failed ones."""
    if record["counts"] is not None:
        return
    out, err = [], []
    for line in record["lines"]:
        cid, body = line["custom_id"], line.get("body") or {}
        outcome = fake.batch_fault(line, record["submission"][cid])
        rid = f"req_{uuid.uuid4().hex[:16]}"
        if outcome == "expired":
            err.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": None, "error": {
                "code": "batch_expired", "message": "This request could not be executed before the completion window "
                "expired."}})
        elif outcome == "canceled":
            err.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": None, "error": {
                "code": "batch_cancelled", "message": "This request was not executed: the batch was cancelled."}})
        elif outcome == "errored":
            err.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": 500, "request_id": rid, "body": {"error": {
                    "message": "The server had an error (injected)", "type": "server_error", "code": None}}},
                "error": None})
        elif outcome == "invalid":
            err.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": 400, "request_id": rid, "body": {"error": {
                    "message": "Invalid 'messages[0].content' (injected)", "type": "invalid_request_error",
                    "code": "invalid_value"}}}, "error": None})
        elif (refusal := _body_refusal(fake, body)) is not None:
            err.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": refusal[0], "request_id": rid, "body": {"error": refusal[1]}}, "error": None})
        else:
            out.append({"id": f"batch_req_{rid}", "custom_id": cid, "response": {
                "status_code": 200, "request_id": rid, "body": _completion_json(*_completion(fake, body, None, None))},
                "error": None})
    dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")  # noqa: E731
    record["output_file_id"] = _new_file(fake, dump(out), "batch_output.jsonl", "batch_output")["id"] if out else None
    record["error_file_id"] = _new_file(fake, dump(err), "batch_errors.jsonl", "batch_output")["id"] if err else None
    record["counts"] = {"total": len(record["lines"]), "completed": len(out), "failed": len(err)}


def _batch_json(fake: FakeAPIServer, record: dict[str, Any]) -> dict[str, Any]:
    status = "failed" if record["errors"] else "in_progress"
    if not record["errors"] and fake.batch_ended(record):
        _finish_batch(fake, record)
        status = "completed"
    counts = record["counts"] or {"total": len(record["lines"]), "completed": 0, "failed": 0}
    now = int(time.time())
    return {"id": record["id"], "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": record["errors"]} if record["errors"] else None,
            "input_file_id": record["input_file_id"], "completion_window": "24h", "status": status,
            "output_file_id": record["output_file_id"], "error_file_id": record["error_file_id"],
            "created_at": record["created_at"], "in_progress_at": record["created_at"],
            "expires_at": record["created_at"] + 86400, "completed_at": now if status == "completed" else None,
            "failed_at": now if status == "failed" else None, "request_counts": counts,
            "metadata": record["metadata"]}


def _batch_get(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    bid = _BATCH.match(req["path"]).group(1)
    with fake._lock:
        record = fake.batches.get(bid)
    if record is None:
        return _error(handler, 404, f"No batch found with id '{bid}'.", param="batch_id")
    handler.send_json(200, _batch_json(fake, record))


def _stream(fake, handler: Handler, ident: str, model: str, text: str, finish: str, usage: dict) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True

    def event(delta: dict, finish_reason=None, extra: dict | None = None) -> None:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        chunk.update(extra or {})
        handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        handler.wfile.flush()

    event({"role": "assistant", "content": ""})
    words = text.split(" ")
    for i, word in enumerate(words):
        event({"content": word if i == 0 else " " + word})
        if fake.token_delay_s:
            time.sleep(fake.token_delay_s)
    event({}, finish, {"usage": usage})
    handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()


def _models(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    handler.send_json(200, {"object": "list", "data": [
        {"id": fake.model, "object": "model", "created": 0, "owned_by": "distillery-fakeapi"}]})


class OpenAICompatServer(FakeAPIServer):
    def __init__(self, *, json_schema_supported: bool = True, json_schema_refusal_status: int = 400,
                 token_delay_s: float = 0.0, reasoning_models: tuple[str, ...] = (), **kwargs):
        super().__init__({("POST", lambda p: p.rstrip("/") == "/v1/chat/completions"): _chat,
                          ("GET", lambda p: p.rstrip("/") == "/v1/models"): _models,
                          ("POST", lambda p: p.rstrip("/") == "/v1/files"): _file_upload,
                          ("GET", lambda p: bool(_FILE.match(p))): _file_content,
                          ("POST", lambda p: p.rstrip("/") == "/v1/batches"): _batch_create,
                          ("GET", lambda p: p.rstrip("/") == "/v1/batches"): _batch_list,
                          ("GET", lambda p: bool(_BATCH.match(p))): _batch_get}, **kwargs)
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.reasoning_models = tuple(reasoning_models)
        self.json_schema_supported = json_schema_supported
        self.json_schema_refusal_status = json_schema_refusal_status
        self.token_delay_s = token_delay_s

    @property
    def base_url(self) -> str:
        """What to pass as the OpenAI SDK's ``base_url`` (ends in /v1)."""
        return f"{self.origin}/v1"


def serve_openai_compat(*, latency_s: float = 0.0, reply: Reply | None = None, script: list | None = None,
                        json_schema_supported: bool = True, json_schema_refusal_status: int = 400,
                        token_delay_s: float = 0.0, reasoning_models: tuple[str, ...] = (),
                        model: str = "fake-model", tls: bool = False, port: int = 0,
                        batch_latency_s: float = 0.0, batch_faults: BatchFaults | None = None) -> OpenAICompatServer:
    """Context manager: ``with serve_openai_compat(...) as srv: OpenAI(base_url=srv.base_url, ...)``."""
    server = OpenAICompatServer(latency_s=latency_s, reply=reply, script=script, tls=tls, port=port, model=model,
                                json_schema_supported=json_schema_supported,
                                json_schema_refusal_status=json_schema_refusal_status, token_delay_s=token_delay_s,
                                reasoning_models=reasoning_models)
    server.batch_latency_s, server.batch_faults = batch_latency_s, batch_faults
    return server
