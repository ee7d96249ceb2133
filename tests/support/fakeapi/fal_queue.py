"""A fake fal.ai queue for the ``openrouter/router`` app, over HTTPS with a self-signed certificate.

Protocol (as fal-client speaks it): ``POST /openrouter/router`` -> ``{request_id, status_url,
response_url, cancel_url}``; ``GET .../requests/<id>/status`` -> ``IN_QUEUE`` / ``IN_PROGRESS`` /
``COMPLETED``; ``GET .../requests/<id>`` -> ``{"output", "usage", "error"}``; ``PUT .../cancel``.
A request completes ``latency_s`` after submission ("timeout" faults hold it in progress longer).
A ("finish", reason) fault answers half the text with that ``finish_reason`` in the result ("partial": with
``partial: true`` and no finish reason; None: as the router answers, no finish reason at all).
``slow_submits=[seconds, ...]``: the first submits are queued at once but answered only after those delays (a
submit whose answer is lost on the way back); ``srv.jobs`` holds every queued request, i.e. what fal would run
and bill. Point fal-client here by setting, before it is imported, ``FAL_QUEUE_RUN_HOST=srv.host`` and
``SSL_CERT_FILE=srv.cert_path`` (see ``srv.client_env()``).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

from tests.support.fakeapi.replies import (Reply, approx_tokens, cut_to_budget, reply_text, schema_from_prompt,
                                           unfinished)
from tests.support.fakeapi.server import FakeAPIServer, Handler

APP_PATH = "/openrouter/router"
_REQ = re.compile(r"^/openrouter/router/requests/([0-9a-f]+)(/status|/cancel)?/?$")


def _submit(fake: "FalQueueServer", handler: Handler, req: dict[str, Any]) -> None:
    if not (handler.headers.get("Authorization") or "").startswith("Key "):
        return handler.send_json(401, {"detail": "Missing or invalid Authorization header"})
    fault = fake.begin_call()
    fake.end_call()
    kind = fault[0] if fault else None
    if kind == "429":
        return handler.send_json(429, {"detail": "Too many requests"},
                                 headers={"Retry-After": str(fault[1]) if len(fault) > 1 else "1"})
    if kind == "500":
        return handler.send_json(500, {"detail": "Internal server error"}, headers={"x-fal-request-id": "x"})
    body = req["body"]
    rid = uuid.uuid4().hex
    delay = float(fault[1]) if kind == "timeout" and len(fault) > 1 else fake.latency_s
    with fake.jobs_lock:
        fake.jobs[rid] = {"body": body, "fault": kind, "fault_args": fault, "ready_at": time.monotonic() + delay,
                          "cancelled": False}
    base = f"{fake.origin}{APP_PATH}/requests/{rid}"
    with fake.jobs_lock:
        slow = fake.slow_submits.pop(0) if fake.slow_submits else 0.0
    if slow:
        time.sleep(slow)
    handler.send_json(200, {"request_id": rid, "response_url": base, "status_url": base + "/status",
                            "cancel_url": base + "/cancel", "queue_position": 0})


def _job_route(fake: "FalQueueServer", handler: Handler, req: dict[str, Any]) -> None:
    match = _REQ.match(req["path"])
    rid, action = match.group(1), match.group(2)
    with fake.jobs_lock:
        job = fake.jobs.get(rid)
    if job is None:
        return handler.send_json(404, {"detail": f"request {rid} not found"})
    done = time.monotonic() >= job["ready_at"]
    if action == "/cancel":
        job["cancelled"] = True
        return handler.send_json(202, {"status": "CANCELLATION_REQUESTED"})
    if action == "/status":
        if done:
            return handler.send_json(200, {"status": "COMPLETED", "logs": None, "metrics": {},
                                           "request_id": rid})
        return handler.send_json(202, {"status": "IN_PROGRESS", "logs": None, "request_id": rid})
    if not done:
        return handler.send_json(400, {"detail": "Request is still in progress"})
    handler.send_json(200, _result(fake, job))


def _result(fake: "FalQueueServer", job: dict[str, Any]) -> dict[str, Any]:
    body, kind = job["body"], job["fault"]
    messages = [{"role": "system", "content": body.get("system_prompt", "")},
                {"role": "user", "content": body.get("prompt", "")}]
    if kind == "garbage":
        return {"unexpected": "shape"}
    max_tokens = int(body.get("max_tokens") or 1 << 30)
    text, cut = cut_to_budget(kind, reply_text(kind, fake.reply, messages, body, schema_from_prompt(messages)),
                              max_tokens)
    # cut off: the text stops early and the router bills the whole max_tokens budget
    completion_tokens = max_tokens if cut else approx_tokens(text)
    usage = {"prompt_tokens": approx_tokens(body.get("prompt", "")) + approx_tokens(body.get("system_prompt", "")),
             "completion_tokens": completion_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["cost"] = round(usage["total_tokens"] * 1e-6, 8)
    result = {"output": text, "reasoning": None, "partial": False, "error": None, "usage": usage}
    if (odd := unfinished(job.get("fault_args"), text)) is not None:
        reason, result["output"] = odd
        if reason == "partial":
            result["partial"] = True
        elif reason is not None:
            result["finish_reason"] = reason
    return result


class FalQueueServer(FakeAPIServer):
    def __init__(self, **kwargs):
        super().__init__({("POST", lambda p: p.rstrip("/") == APP_PATH): _submit,
                          ("GET", lambda p: bool(_REQ.match(p))): _job_route,
                          ("PUT", lambda p: bool(_REQ.match(p))): _job_route}, **kwargs)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.jobs_lock = threading.Lock()
        self.slow_submits: list[float] = []

    def client_env(self) -> dict[str, str]:
        """Environment for a process whose fal-client should talk to this server."""
        env = {"FAL_QUEUE_RUN_HOST": self.host, "FAL_RUN_HOST": self.host}
        if self.cert_path is not None:
            env["SSL_CERT_FILE"] = str(self.cert_path)
        return env


def serve_fal_queue(*, latency_s: float = 0.0, reply: Reply | None = None, script: list | None = None,
                    tls: bool = True, port: int = 0, slow_submits: list[float] | None = None) -> FalQueueServer:
    srv = FalQueueServer(latency_s=latency_s, reply=reply, script=script, tls=tls, port=port)
    srv.slow_submits = list(slow_submits or [])
    return srv
