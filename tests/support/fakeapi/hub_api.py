"""A fake Hugging Face Hub: the HTTP endpoints ``huggingface_hub`` 2.4.0 calls to create a repo and commit to it.

Speaks, as the Hub does (``HfApi(endpoint=srv.endpoint, token=...)``):

* ``GET  /api/whoami-v2`` -> ``{"name": <user>}`` (the token's owner);
* ``POST /api/repos/create`` ``{name, organization, visibility, type, sdk}`` -> ``{"url"}``; a bare name lands in
  the token owner's namespace; an existing repo is a 409 whose body still carries its ``url``, and keeps its
  visibility (the Hub ignores ``private`` then); a Space without ``sdk`` is a 400;
* ``GET  /api/{models,datasets,spaces}/<ns>/<name>[/revision/<rev>]`` -> repo info (``id``, ``private``, ``sha``,
  ``siblings``);
* ``GET  /api/<type>s/<ns>/<name>/tree/<rev>?recursive=true`` -> the files;
* ``POST /api/validate-yaml`` (a README's front matter) -> no errors;
* ``POST /api/<type>s/<ns>/<name>/preupload/<rev>`` -> every file ``regular`` (so content travels in the commit;
  the LFS/Xet transfer of large files is NOT spoken here) with the current blob's git oid, so an unchanged file is
  skipped by the client as on the Hub;
* ``POST /api/<type>s/<ns>/<name>/commit/<rev>`` (NDJSON: ``header``, ``file``, ``deletedFile``, ``deletedFolder``)
  -> ``{"commitUrl", "commitOid"}``: applied all at once, or not at all.

Requests need ``Authorization: Bearer <token>`` (401 otherwise). ``srv.repos`` holds each repo's files and
commits, for tests to read; ``srv.add_repo(...)`` makes one beforehand (e.g. an existing public repo).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.gguf filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_oid(content: bytes) -> str:
    """The git blob id the Hub reports for a regular file (what huggingface_hub compares to skip unchanged files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    private: bool
    sdk: str | None = None
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": GITATTRIBUTES})
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        hub.log(method, path, dict(query), raw)
        if (self.headers.get("Authorization") or "") != f"Bearer {hub.token}":
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        status, payload = hub.handle(method, path, query, raw)
        self._send(status, payload)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


class FakeHub:
    """``with FakeHub(token=..., user=...) as hub: HfApi(endpoint=hub.endpoint, token=...)``."""

    def __init__(self, *, token: str, user: str = "fake-user"):
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None

    # -- lifecycle
    def __enter__(self) -> FakeHub:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- for tests
    def add_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                 files: dict[str, bytes] | None = None) -> FakeRepo:
        repo = FakeRepo(repo_id, repo_type, private)
        repo.files.update(files or {})
        repo.commits.append({"oid": hashlib.sha1(repo_id.encode()).hexdigest(), "summary": "initial commit",
                             "added": sorted(repo.files), "deleted": []})
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def log(self, method: str, path: str, query: dict, raw: bytes) -> None:
        with self._lock:
            self.requests.append((method, path))

    # -- the API
    def handle(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, Any]:
        with self._lock:
            if method == "GET" and path == "/api/whoami-v2":
                return 200, {"type": "user", "name": self.user, "orgs": [], "auth": {"type": "access_token"}}
            if method == "POST" and path == "/api/validate-yaml":
                return 200, {"errors": [], "warnings": []}
            if method == "POST" and path == "/api/repos/create":
                return self._create(json.loads(raw or b"{}"))
            m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(tree|preupload|commit|revision)/([^/]+)"
                             r"(/.*)?)?", path)
            if not m:
                return 404, {"error": f"no route for {method} {path}"}
            repo_type, repo_id, action, _revision, _rest = _TYPES[m.group(1)], m.group(2), m.group(3), m.group(4), \
                m.group(5)
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                return 404, {"error": "Repository not found"}
            if method == "GET" and action in (None, "revision"):
                return 200, {"id": repo_id, "modelId": repo_id, "private": repo.private, "sha": repo.sha,
                             "sdk": repo.sdk, "siblings": [{"rfilename": f} for f in sorted(repo.files)]}
            if method == "GET" and action == "tree":
                return 200, [{"type": "file", "path": f, "size": len(c), "oid": git_oid(c)}
                             for f, c in sorted(repo.files.items())]
            if method == "POST" and action == "preupload":
                files = json.loads(raw)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                        "oid": git_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
                                       for f in files]}
            if method == "POST" and action == "commit":
                return self._commit(repo, raw)
            return 404, {"error": f"no route for {method} {path}"}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.endpoint}/{_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}
        if repo_type == "space" and not body.get("sdk"):
            return 400, {"error": "sdk is required for a Space"}
        repo = FakeRepo(repo_id, repo_type, private=body.get("visibility") == "private", sdk=body.get("sdk"))
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def _commit(self, repo: FakeRepo, raw: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            return 400, {"error": "missing commit header"}
        files = dict(repo.files)
        added, deleted = [], []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                added.append(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return 404, {"error": f"A file with this name doesn't exist: {value['path']}"}
                del files[value["path"]]
                deleted.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for name in [n for n in files if n.startswith(prefix)]:
                    del files[name]
                    deleted.append(name)
            elif key != "header":
                return 400, {"error": f"this fake Hub does not take {key!r} operations"}
        oid = hashlib.sha1(json.dumps([repo.sha, header, added, deleted]).encode()).hexdigest()
        repo.files = files
        repo.commits.append({"oid": oid, "summary": header.get("summary"), "added": added, "deleted": deleted})
        return 200, {"commitUrl": f"{self.endpoint}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}",
                     "commitOid": oid}


def serve_hub(*, token: str, user: str = "fake-user") -> FakeHub:
    return FakeHub(token=token, user=user)
