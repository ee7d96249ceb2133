"""A fake Anthropic Messages API: POST /v1/messages (non-streaming), errors in Anthropic's shape.

A ("finish", reason) fault answers half the text with that ``stop_reason`` (None: null); "tool_use" adds a
tool_use block after the text."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.fakeapi.replies import Reply, approx_tokens, cut_to_budget, reply_text, unfinished
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


def _messages(fake: FakeAPIServer, handler: Handler, req: dict[str, Any]) -> None:
    body = req["body"]
    if not (handler.headers.get("x-api-key") or (handler.headers.get("Authorization") or "").startswith("Bearer ")):
        return _error(handler, 401, "authentication_error", "x-api-key or Authorization: Bearer is required")
    for name in ("temperature", "top_p", "top_k"):  # API version 2026-10-21 rejects sampling parameters
        if name in body and handler.headers.get("anthropic-version", "") >= "2026-10-21":
            return _error(handler, 400, "invalid_request_error", f"{name}: Extra inputs are not permitted")
    if "max_tokens" not in body:
        return _error(handler, 400, "invalid_request_error", "max_tokens: Field required")
    if any(m.get("role") == "system" for m in body.get("messages", [])):
        return _error(handler, 400, "invalid_request_error",
                      "messages: Unexpected role \"system\". Use the top-level system parameter")
    output_format = (body.get("output_config") or {}).get("format")
    if output_format is not None and (problem := schema_problem(output_format.get("schema"))) is not None:
        return _error(handler, 400, "invalid_request_error", f"output_config.format.{problem}")
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
        handler.send_json(200, {
            "id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
            "model": body.get("model") or fake.model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": sum(approx_tokens(str(m.get("content", ""))) for m in messages),
                      "output_tokens": approx_tokens(text)}})
    finally:
        fake.end_call()


class AnthropicServer(FakeAPIServer):
    def __init__(self, **kwargs):
        super().__init__({("POST", lambda p: p.rstrip("/") == "/v1/messages"): _messages}, **kwargs)

    @property
    def base_url(self) -> str:
        """What to pass as the Anthropic SDK's ``base_url`` (it appends /v1/messages)."""
        return self.origin


def serve_anthropic(*, latency_s: float = 0.0, reply: Reply | None = None, script: list | None = None,
                    model: str = "claude-sonnet-5-5", tls: bool = False, port: int = 0) -> AnthropicServer:
    return AnthropicServer(latency_s=latency_s, reply=reply, script=script, tls=tls, port=port, model=model)
