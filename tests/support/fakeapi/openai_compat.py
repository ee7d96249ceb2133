"""A fake OpenAI-compatible server: POST /v1/chat/completions (JSON or SSE stream), GET /v1/models.

``json_schema_supported=False`` makes it refuse ``response_format: json_schema`` with a 400, as some
OpenAI-compatible servers do (``json_schema_refusal_status=500`` answers as llama-cpp-python's server does), so the client's fallback to ``json_object`` can be exercised.
``token_delay_s`` spaces streamed tokens (time-to-first-token = latency_s).
Reasoning models (o1/o3/o4, gpt-5.x, gpt-6.x, and the names in ``reasoning_models``) refuse ``max_tokens`` and
a ``temperature`` other than 1 with OpenAI's 400 (``unsupported_parameter`` / ``unsupported_value``).
A ("finish", reason) fault answers half the text with that ``finish_reason`` (None: null); "tool_calls" answers
a tool call instead of text, "refusal" a structured-output refusal (``message.refusal``, finish_reason "stop",
as OpenAI sends it).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from tests.support.fakeapi.replies import (Reply, approx_tokens, cut_to_budget, reply_text, schema_from_prompt,
                                           unfinished)
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


def _chat(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if (refusal := _parameter_refusal(fake, body)) is not None:
        return handler.send_json(400, {"error": refusal})
    fmt_type = (body.get("response_format") or {}).get("type")
    if fmt_type == "json_schema" and not getattr(fake, "json_schema_supported", True):
        return handler.send_json(getattr(fake, "json_schema_refusal_status", 400), {"error": {
            "message": "response_format type 'json_schema' is not supported by this server",
            "type": "invalid_request_error", "param": "response_format", "code": None}})
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
        ident, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", body.get("model") or fake.model
        if body.get("stream"):
            return _stream(fake, handler, ident, model, text, finish, usage)
        handler.send_json(200, {
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage})
    finally:
        fake.end_call()


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
                          ("GET", lambda p: p.rstrip("/") == "/v1/models"): _models}, **kwargs)
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
                        model: str = "fake-model", tls: bool = False, port: int = 0) -> OpenAICompatServer:
    """Context manager: ``with serve_openai_compat(...) as srv: OpenAI(base_url=srv.base_url, ...)``."""
    return OpenAICompatServer(latency_s=latency_s, reply=reply, script=script, tls=tls, port=port, model=model,
                              json_schema_supported=json_schema_supported,
                              json_schema_refusal_status=json_schema_refusal_status, token_delay_s=token_delay_s,
                              reasoning_models=reasoning_models)
