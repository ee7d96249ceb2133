"""The threaded HTTP(S) server the fake APIs share: random free port on 127.0.0.1, keep-alive, request log.

Bodies are JSON, or ``multipart/form-data`` (a file upload: the route gets ``{"fields": {...}, "files": {name:
(filename, bytes)}}``). Batch bookkeeping shared by the Anthropic and OpenAI fakes: ``batch_latency_s`` (how long
a batch takes to end, read at every look, so a test can hold batches open and then let them end),
``batch_faults(line, n)`` (the outcome to inject for a batch line on its n-th submission: ``"errored"`` (a server
error), ``"invalid"`` (the request refused as invalid), ``"expired"``, ``"canceled"`` or None), and
``submissions``, a counter of every submission of a prompt, online or in a batch (keyed by ``prompt_key(body)``:
the messages, system turn and budget). ``lose_batch_replies`` (a count) makes the next batch creations be
accepted -- recorded and counted like any other -- while their HTTP reply is lost: the server closes the
connection without answering, after ``lose_reply_after_s`` (0: at once; longer than the client's timeout: the
client times out first). Routes get the query string too (``req["query"]``: name -> last value), for the list
endpoints' pagination.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.fakeapi.replies import BatchFaults, Reply, Script, prompt_key

Route = Callable[["FakeAPIServer", "Handler", dict[str, Any]], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address):
        if self.ssl_context is not None:  # TLS handshake in the worker thread, not the accept loop
            request = self.ssl_context.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):  # clients that hang up (timeouts) are expected
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "distillery-fakeapi/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; no 40 ms Nagle stalls

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _dispatch(self, method: str) -> None:
        fake: FakeAPIServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        try:
            if content_type.startswith("multipart/form-data"):
                body = _multipart(content_type, raw)
            else:
                body = json.loads(raw) if raw else {}
        except ValueError:
            return self.send_json(400, {"error": {"message": "request body is not JSON"}})
        path, _, query = self.path.partition("?")
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        fake.record(method, path, {k.lower(): v for k, v in self.headers.items()}, body)
        for (m, matcher), route in fake.routes.items():
            if m == method and matcher(path):
                try:
                    return route(fake, self, {"path": path, "body": body, "query": params})
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.close_connection = True
                    return
        self.send_json(404, {"error": {"message": f"no route for {method} {path}"}})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

    def send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as ``{"fields": {name: text}, "files": {name: (filename, bytes)}}``."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + raw)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    out: dict[str, Any] = {"fields": {}, "files": {}}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            out["files"][name] = (filename, data)
        else:
            out["fields"][name] = data.decode("utf-8")
    return out


class FakeAPIServer:
    """Base for the three fakes. ``routes`` maps (method, path predicate) to a handler function."""

    def __init__(self, routes: dict, *, latency_s: float = 0.0, reply: Reply | None = None,
                 script: list | None = None, tls: bool = False, model: str = "fake-model", port: int = 0):
        self.routes = routes
        self._port = port  # 0 = a random free port
        self.latency_s = latency_s
        self.reply = reply
        self.script = Script(script)
        self.model = model
        self.tls = tls
        self.requests: list[dict[str, Any]] = []
        self.request_count = 0  # calls to the API's generation endpoint
        self.batch_latency_s = 0.0  # a batch ends this long after it was created (read at every look)
        self.batch_faults: BatchFaults | None = None
        self.batches: dict[str, dict[str, Any]] = {}  # id -> the batch's own record (each fake's shape)
        self.submissions: Counter = Counter()  # prompt_key -> times sent (online or in a batch)
        self.batch_lines: Counter = Counter()  # custom_id -> times it arrived in a batch
        self.lose_batch_replies = 0  # the next this many batch creations are accepted and their reply lost
        self.lose_reply_after_s = 0.0  # how long the server holds the connection before closing it unanswered
        self.lost_replies: list[str] = []  # ids of the batches whose creation reply was lost
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.cert_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def __enter__(self) -> FakeAPIServer:
        self._httpd = _Server(("127.0.0.1", self._port), Handler)
        self._httpd.fake = self  # type: ignore[attr-defined]
        if self.tls:
            from tests.support.fakeapi.tls import self_signed_cert

            self._tmp = tempfile.TemporaryDirectory(prefix="fakeapi-tls-")
            self.cert_path, key_path = self_signed_cert(Path(self._tmp.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_path, key_path)
            self._httpd.ssl_context = context
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakeapi", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started (use it as a context manager)"
        return self._httpd.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    # -- bookkeeping used by the routes
    def record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})

    def count_submission(self, body: dict[str, Any], custom_id: str | None = None) -> int:
        """Count one submission of ``body`` (and of ``custom_id``, for a batch line); the times it was sent."""
        with self._lock:
            key = prompt_key(body)
            self.submissions[key] += 1
            if custom_id is not None:
                self.batch_lines[custom_id] += 1
            return self.submissions[key]

    def lose_reply(self, handler: Handler, batch_id: str) -> bool:
        """Whether the reply to this accepted batch creation is to be lost; if so the connection is closed
        unanswered (after ``lose_reply_after_s``), as a reply lost on the way does to the client."""
        with self._lock:
            if self.lose_batch_replies <= 0:
                return False
            self.lose_batch_replies -= 1
            self.lost_replies.append(batch_id)
        if self.lose_reply_after_s > 0:
            self._closing.wait(self.lose_reply_after_s)  # held until then, or until the server stops
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def list_page(self, records: list[dict[str, Any]], query: dict[str, str], *, default_limit: int,
                  max_limit: int, cursor: str = "after") -> tuple[list[dict[str, Any]], bool]:
        """One page of ``records`` (newest first) as the list endpoints page: ``limit``; ``<cursor>`` (OpenAI
        ``after``, Anthropic ``after_id``): the records after that id; ``before_id``: the page just before it.
        Returns (the page, whether more records lie beyond it in the direction paged)."""
        limit = max(1, min(int(query.get("limit") or default_limit), max_limit))
        ids = [r["id"] for r in records]
        if query.get("before_id"):
            end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
            start = max(0, end - limit)
            return records[start:end], start > 0
        start = ids.index(query[cursor]) + 1 if query.get(cursor) in ids else 0
        return records[start:start + limit], start + limit < len(records)

    def batch_ended(self, record: dict[str, Any]) -> bool:
        return time.monotonic() >= record["created"] + self.batch_latency_s

    def batch_fault(self, line: dict[str, Any], submission: int) -> str | None:
        return self.batch_faults(line, submission) if self.batch_faults is not None else None

    def begin_call(self) -> tuple | None:
        """Count one generation call and return the fault scripted for it (or None)."""
        with self._lock:
            self.request_count += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        return self.script.next()

    def end_call(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def wait_latency(self) -> None:
        if self.latency_s > 0:
            time.sleep(self.latency_s)

    def wait_for(self, fault: tuple | None) -> str | None:
        """The fault's kind, after the delay the call takes: the scripted hang of a "timeout" fault (30 s by
        default), otherwise the server's latency."""
        kind = fault[0] if fault else None
        if kind == "timeout":
            time.sleep(float(fault[1]) if len(fault) > 1 else 30.0)
        else:
            self.wait_latency()
        return kind
