"""A local Hugging Face Hub: the HTTP API ``huggingface_hub`` 2.4.0 speaks to create a repo, upload to it (git
LFS included) and read it back, on 127.0.0.1.

    with serve_hub(token="hf_x", user="ada") as hub:      # or: python -m tests.support.fakeapi.hub_api --port 8020
        HfApi(endpoint=hub.endpoint, token="hf_x").upload_file(...)

Routes, as the Hub answers them (``<t>`` is models, datasets or spaces; the model prefix in URLs is empty):

* ``GET  /api/whoami-v2`` -> ``{"name": <user>}``; ``GET /api/agent-harnesses`` (no token) -> an empty registry;
* ``POST /api/repos/create`` ``{name, organization, visibility|private, type, sdk}`` -> ``{"url"}``: a bare name
  lands in the token owner's namespace; ``private`` or ``visibility: private`` makes it private, nothing makes it
  public (the Hub's default for a user); an existing repo is a 409 whose body still carries its ``url`` and keeps
  its visibility; a Space without ``sdk`` is a 400. A new repo has one commit holding ``.gitattributes``;
* ``GET  /api/<t>/<ns>/<name>[/revision/<rev>]`` -> ``id``, ``private``, ``sha`` (the revision's commit), and
  ``siblings`` with ``size``, ``blobId`` and, for an LFS file, ``lfs: {sha256, size, pointerSize}``;
* ``GET  /api/<t>/<ns>/<name>/tree/<rev>[/<path>]?recursive=`` -> files (``oid`` = git blob id; an LFS file's
  blob is its pointer and ``lfs: {oid: <sha256>, size, pointerSize}``) and directories;
* ``GET|HEAD /<prefix><ns>/<name>/resolve/<rev>/<path>`` -> the file's bytes with ``X-Repo-Commit``, ``ETag`` and,
  for an LFS file, ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size`` (what ``hf_hub_download`` reads);
* ``GET  /api/<t>/<ns>/<name>/commits/<rev>`` -> the commits, newest first (``id``, ``title``, ``date``, ``authors``);
* ``GET  /api/<t>/<ns>/<name>/refs`` -> ``branches`` (``main`` and its ``targetCommit``), ``tags``, ``converts``;
* ``POST /api/validate-yaml`` -> no errors;
* ``POST /api/<t>/<ns>/<name>/preupload/<rev>`` -> ``uploadMode`` per file, decided as the Hub does: ``lfs`` when
  ``.gitattributes`` puts the path under ``filter=lfs``, when the 512-byte sample holds a NUL byte (binary) or
  above 10 MB; else ``regular``. ``oid`` is the file's current id (sha256 for LFS, git blob id otherwise), which
  the client compares to skip unchanged files;
* ``POST /<prefix><ns>/<name>.git/info/lfs/objects/batch`` (git LFS batch API, ``operation: upload``) -> per
  object: no ``actions`` when the store already has it; else ``basic`` (one ``PUT``) or, for an object above
  ``multipart_threshold`` when the client offers ``multipart``, the Hub's multipart form (``header`` with
  ``chunk_size`` and one presigned URL per part; each part ``PUT`` answers an ``ETag``; a ``POST`` of
  ``{oid, parts}`` to the upload URL completes it) and a ``verify`` action. Upload URLs are presigned (no
  ``Authorization``, as S3's), the stored bytes must hash to the oid and match the size or they are refused;
* ``POST /api/<t>/<ns>/<name>/commit/<rev>`` (NDJSON: ``header`` with optional ``parentCommit``, ``file`` base64,
  ``lfsFile`` by oid, ``deletedFile``, ``deletedFolder``) -> ``{"commitUrl", "commitOid"}``. Checked whole before
  anything changes: an ``lfsFile`` whose object was never uploaded, a deleted file that is not there, or a
  ``parentCommit`` that is not the branch head (412) refuses the commit and the branch stays where it was.
* ``/api/<t>/<ns>/<name>/xet-write-token/<rev>`` -> 501 naming ``HF_HUB_DISABLE_XET=1``: this server does not
  speak Xet (the client's default transfer when ``hf_xet`` is installed).

API requests need ``Authorization: Bearer <token>`` (401 otherwise). Faults for tests: ``hub.fail(stage, status,
times=1)`` makes the next request(s) of a stage (``preupload``, ``lfs_batch``, ``lfs_upload`` (a basic PUT or a
part), ``lfs_complete``, ``lfs_verify``, ``commit``) answer ``status``. ``hub.repos`` holds each repo's files
(content by path), which paths are LFS, and every commit's snapshot; ``hub.lfs_objects`` the LFS store;
``hub.requests`` every ``(method, path)``; ``hub.transfers`` the bytes received per stage.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = (b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.pt filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
REGULAR_MAX_BYTES = 10 * 1000 * 1000  # above this the Hub asks for LFS whatever the content
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
STAGES = ("preupload", "lfs_batch", "lfs_upload", "lfs_complete", "lfs_verify", "commit")


def git_oid(content: bytes) -> str:
    """The git blob id the Hub reports for a file stored in git (a regular file, or an LFS file's pointer)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def lfs_patterns(gitattributes: bytes) -> list[str]:
    return [line.split()[0] for line in gitattributes.decode("utf-8", "replace").splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line.split()[1:]]


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) if "/" in pattern else fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    private: bool
    sdk: str | None = None
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": GITATTRIBUTES})
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS pointers
    commits: list[dict[str, Any]] = field(default_factory=list)  # oldest first; each with its snapshot

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40

    def snapshot(self, revision: str) -> tuple[dict[str, bytes], set[str], str] | None:
        """(files, lfs paths, commit oid) at ``main`` or at a commit id; None when there is no such revision."""
        if revision in ("main", "refs/heads/main", self.sha):
            return self.files, self.lfs, self.sha
        for commit in self.commits:
            if commit["oid"] == revision:
                return commit["files"], commit["lfs"], commit["oid"]
        return None

    def entry(self, path: str, files: dict[str, bytes] | None = None, lfs: set[str] | None = None) -> dict[str, Any]:
        files, lfs = (self.files, self.lfs) if files is None else (files, lfs or set())
        content = files[path]
        if path in lfs:
            sha256 = hashlib.sha256(content).hexdigest()
            pointer = lfs_pointer(sha256, len(content))
            return {"type": "file", "path": path, "size": len(content), "oid": git_oid(pointer),
                    "lfs": {"oid": sha256, "size": len(content), "pointerSize": len(pointer)}}
        return {"type": "file", "path": path, "size": len(content), "oid": git_oid(content)}

    def sha256(self, path: str) -> str:
        """The sha256 of a file's content (for tests)."""
        return hashlib.sha256(self.files[path]).hexdigest()

    def _commit(self, summary: str, files: dict[str, bytes], lfs: set[str], added: list[str],
                deleted: list[str]) -> str:
        oid = hashlib.sha1(json.dumps([self.sha, summary, added, deleted, time.time_ns()]).encode()).hexdigest()
        self.files, self.lfs = files, lfs
        self.commits.append({"oid": oid, "summary": summary, "added": added, "deleted": deleted,
                             "files": dict(files), "lfs": set(lfs),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())})
        return oid


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a client that hangs up is not the server's failure
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = isinstance(payload, bytes)  # a file's content (resolve)
        data = payload if raw else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 400 and isinstance(payload, dict) and "error" in payload:
            self.send_header("X-Error-Message", str(payload["error"]).splitlines()[0][:200])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        raw = self._body()
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        authorized = (self.headers.get("Authorization") or "") == f"Bearer {hub.token}"
        status, payload, headers = hub.handle(method, path, query, raw, authorized=authorized)
        hub.log(method, path, status, len(raw))
        self._send(status, payload, headers)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_HEAD(self):
        self._dispatch("HEAD")


class FakeHub:
    """``with FakeHub(token=..., user=...) as hub: HfApi(endpoint=hub.endpoint, token=...)``."""

    def __init__(self, *, token: str, user: str = "fake-user", port: int = 0, multipart_threshold: int = 16 << 20,
                 chunk_size: int = 8 << 20, echo: bool = False):
        self.token, self.user = token, user
        self.multipart_threshold, self.chunk_size = multipart_threshold, chunk_size
        self.echo = echo  # print one line per request (the standalone server)
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content (the LFS store, shared like the Hub's)
        self.requests: list[tuple[str, str]] = []
        self.transfers: dict[str, int] = {stage: 0 for stage in STAGES}  # request-body bytes received per stage
        self._uploads: dict[str, dict[str, Any]] = {}  # presigned upload id -> {oid, size, parts}
        self._faults: list[list[Any]] = []  # [stage, status, times left]
        self._port = port
        self._lock = threading.RLock()
        self._httpd: _Server | None = None

    # -- lifecycle
    def __enter__(self) -> FakeHub:
        self._httpd = _Server(("127.0.0.1", self._port), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "server not started (use it as a context manager)"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- for tests
    def add_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                 files: dict[str, bytes] | None = None) -> FakeRepo:
        repo = FakeRepo(repo_id, repo_type, private)
        with self._lock:
            content = {**repo.files, **(files or {})}
            repo._commit("initial commit", content, set(), sorted(content), [])
            self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def fail(self, stage: str, status: int = 500, times: int = 1) -> None:
        """The next ``times`` requests of ``stage`` answer ``status`` (and change nothing)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        with self._lock:
            self._faults.append([stage, status, times])

    def count(self, method: str, pattern: str) -> int:
        """Requests so far whose method is ``method`` and path matches the regex ``pattern``."""
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def log(self, method: str, path: str, status: int, nbytes: int) -> None:
        with self._lock:
            self.requests.append((method, path))
        if self.echo:
            print(f"{time.strftime('%H:%M:%S')} {method} {path.split('?')[0]} -> {status} ({nbytes} bytes in)",
                  flush=True)

    def _fault(self, stage: str) -> tuple[int, Any, dict] | None:
        for fault in self._faults:
            if fault[0] == stage and fault[2] > 0:
                fault[2] -= 1
                return fault[1], {"error": f"injected failure of {stage} (HTTP {fault[1]})"}, {}
        return None

    def _url(self, repo: FakeRepo) -> str:
        return f"{self.endpoint}/{_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -- the API
    def handle(self, method: str, path: str, query: dict, raw: bytes, *,
               authorized: bool) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            if path.startswith("/_lfs/"):  # presigned storage URLs: the signature is in the URL, no token
                return self._storage(method, path, query, raw)
            if method == "GET" and path == "/api/agent-harnesses":  # the client's user-agent registry, public
                return 200, {"standardEnvVars": [], "harnesses": {}}, {}
            if not authorized:
                return 401, {"error": "Invalid credentials in Authorization header"}, {}
            if method == "GET" and path == "/api/whoami-v2":
                return 200, {"type": "user", "name": self.user, "orgs": [], "auth": {"type": "access_token"}}, {}
            if method == "POST" and path == "/api/validate-yaml":
                return 200, {"errors": [], "warnings": []}, {}
            if method == "POST" and path == "/api/repos/create":
                return self._create(json.loads(raw or b"{}"))
            m = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)", path)
            if m and method == "POST":
                repo = self.repos.get(({"datasets/": "dataset", "spaces/": "space"}.get(m.group(1) or "", "model"),
                                       m.group(2)))
                if repo is None:
                    return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
                if m.group(3) == "batch":
                    return self._fault("lfs_batch") or self._lfs_batch(repo, json.loads(raw))
                body = json.loads(raw)
                stored = self.lfs_objects.get(body.get("oid", ""))
                if stored is None or len(stored) != body.get("size"):
                    return 404, {"error": f"object {body.get('oid')} of size {body.get('size')} is not stored"}, {}
                return self._fault("lfs_verify") or (200, {"message": "verified"}, {})
            m = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m and method in ("GET", "HEAD") and not path.startswith("/api/"):
                return self._resolve(m.group(1), m.group(2), m.group(3), m.group(4))
            m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+?)"
                             r"(?:/(tree|preupload|commit|commits|revision|refs|xet-write-token)(?:/([^/]+)(/.*)?)?)?", path)
            if not m:
                return 404, {"error": f"no route for {method} {path}"}, {}
            repo_type, repo_id, action, revision, rest = (_TYPES[m.group(1)], m.group(2), m.group(3),
                                                          m.group(4) or "main", (m.group(5) or "").strip("/"))
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            if action == "xet-write-token":
                return 501, {"error": "this local Hub does not speak Xet: set HF_HUB_DISABLE_XET=1 so huggingface_hub "
                                      "uploads through git LFS"}, {}
            if method == "GET" and action == "refs":
                return 200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}],
                             "converts": [], "tags": [], "pullRequests": []}, {}
            if method == "GET" and action == "commits":  # newest first, as the Hub lists them
                if repo.snapshot(revision) is None:
                    return 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
                return 200, [{"id": c["oid"], "title": c["summary"], "message": "", "date": c["date"],
                              "authors": [{"user": self.user}]} for c in reversed(repo.commits)], {}
            snap = repo.snapshot(revision)
            if method == "GET" and action in (None, "revision", "tree") and snap is None:
                return 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
            if method == "GET" and action in (None, "revision"):
                files, lfs, sha = snap
                siblings = []
                for name in sorted(files):
                    entry = repo.entry(name, files, lfs)
                    lfs_info = entry.get("lfs")
                    siblings.append({"rfilename": name, "size": entry["size"], "blobId": entry["oid"], **(
                        {"lfs": {"sha256": lfs_info["oid"], "size": lfs_info["size"],
                                 "pointerSize": lfs_info["pointerSize"]}} if lfs_info else {})})
                return 200, {"id": repo_id, "modelId": repo_id, "private": repo.private, "sha": sha,
                             "sdk": repo.sdk, "siblings": siblings}, {}
            if method == "GET" and action == "tree":
                return self._tree(repo, snap, rest, query)
            if method == "POST" and action == "preupload":
                return self._fault("preupload") or self._preupload(repo, json.loads(raw))
            if method == "POST" and action == "commit":
                return self._fault("commit") or self._commit(repo, raw)
            return 404, {"error": f"no route for {method} {path}"}, {}

    def _resolve(self, prefix: str | None, repo_id: str, revision: str, path: str) -> tuple[int, Any, dict]:
        """A file's bytes at a revision, with the headers hf_hub_download reads (commit, etag, LFS size)."""
        repo = self.repos.get(({"datasets/": "dataset", "spaces/": "space"}.get(prefix or "", "model"), repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        snap = repo.snapshot(unquote(revision))
        if snap is None:
            return 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
        files, lfs, sha = snap
        if path not in files:
            return 404, {"error": f"{path} does not exist"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
        entry = repo.entry(path, files, lfs)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(entry["size"])})
        return 200, files[path], headers

    def _create(self, body: dict[str, Any]) -> tuple[int, Any, dict]:
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.endpoint}/{_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}, {}
        if repo_type == "space" and not body.get("sdk"):
            return 400, {"error": "sdk is required for a Space"}, {}
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = FakeRepo(repo_id, repo_type, private=private, sdk=body.get("sdk"))
        repo._commit("initial commit", dict(repo.files), set(), sorted(repo.files), [])
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}, {}

    def _tree(self, repo: FakeRepo, snap, prefix: str, query: dict) -> tuple[int, Any, dict]:
        files, lfs, _sha = snap
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("true", "1")
        base = prefix + "/" if prefix else ""
        out, folders = [], set()
        for name in sorted(files):
            if not name.startswith(base):
                continue
            rest = name[len(base):]
            if "/" in rest:
                parts = rest.split("/")[:-1]
                for depth in range(1, (len(parts) if recursive else 1) + 1):
                    folders.add(base + "/".join(parts[:depth]))
                if not recursive:
                    continue
            out.append(repo.entry(name, files, lfs))
        if prefix and not out and not folders:
            return 404, {"error": f"{prefix} does not exist"}, {"X-Error-Code": "EntryNotFound"}
        out += [{"type": "directory", "path": f, "size": 0, "oid": git_oid(f.encode())} for f in sorted(folders)]
        return 200, out, {}

    def _is_lfs(self, repo: FakeRepo, path: str, size: int, sample: bytes) -> bool:
        patterns = lfs_patterns(repo.files.get(".gitattributes", b""))
        return any(_matches(path, p) for p in patterns) or b"\0" in sample or size > REGULAR_MAX_BYTES

    def _preupload(self, repo: FakeRepo, body: dict[str, Any]) -> tuple[int, Any, dict]:
        out = []
        for f in body["files"]:
            path, size = f["path"], int(f["size"])
            lfs = self._is_lfs(repo, path, size, base64.b64decode(f.get("sample") or ""))
            oid = None
            if path in repo.files:
                entry = repo.entry(path)
                oid = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": out}, {}

    def _lfs_batch(self, repo: FakeRepo, body: dict[str, Any]) -> tuple[int, Any, dict]:
        if body.get("operation") != "upload":
            return 422, {"message": "only the upload operation is spoken here"}, {}
        multipart = "multipart" in (body.get("transfers") or ["basic"])
        objects = []
        for obj in body["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "oid is not a sha256"}})
                continue
            if oid in self.lfs_objects:
                objects.append({"oid": oid, "size": size})  # already stored: nothing to send
                continue
            upload_id = secrets.token_hex(12)
            href = f"{self.endpoint}/_lfs/{upload_id}?X-Amz-Signature={secrets.token_hex(8)}"
            self._uploads[upload_id] = {"oid": oid, "size": size, "parts": {}, "sig": href.rsplit("=", 1)[1]}
            verify = {"href": f"{self._url(repo)}.git/info/lfs/objects/verify", "header": {}}
            if multipart and size > self.multipart_threshold:
                nparts = -(-size // self.chunk_size)
                header = {"chunk_size": str(self.chunk_size)}
                header.update({str(i): f"{href}&partNumber={i}" for i in range(1, nparts + 1)})
                actions = {"upload": {"href": href, "header": header}, "verify": verify}
            else:
                actions = {"upload": {"href": href}, "verify": verify}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        return 200, {"transfer": "multipart" if multipart else "basic", "objects": objects, "hash_algo": "sha256"}, {}

    def _storage(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, Any, dict]:
        upload_id = path[len("/_lfs/"):]
        upload = self._uploads.get(upload_id)
        if upload is None or (query.get("X-Amz-Signature") or [""])[0] != upload["sig"]:
            return 403, {"error": "SignatureDoesNotMatch"}, {}
        part = (query.get("partNumber") or [None])[0]
        if method == "PUT":
            stage = "lfs_upload"
            fault = self._fault(stage)
            if fault:
                return fault
            self.transfers[stage] += len(raw)
            if part is not None:
                upload["parts"][int(part)] = raw
                return 200, None, {"ETag": f'"{hashlib.md5(raw).hexdigest()}"'}
            return self._store(upload_id, raw)
        if method == "POST" and part is None:  # multipart completion
            fault = self._fault("lfs_complete")
            if fault:
                return fault
            body = json.loads(raw)
            parts = upload["parts"]
            numbers = [p["partNumber"] for p in body.get("parts", [])]
            if numbers != list(range(1, len(parts) + 1)) or any(
                    p["etag"].strip('"') != hashlib.md5(parts[p["partNumber"]]).hexdigest() for p in body["parts"]):
                return 400, {"error": "InvalidPart: the parts listed are not the parts uploaded"}, {}
            return self._store(upload_id, b"".join(parts[n] for n in numbers))
        return 405, {"error": f"{method} not allowed on a storage URL"}, {}

    def _store(self, upload_id: str, content: bytes) -> tuple[int, Any, dict]:
        upload = self._uploads.pop(upload_id)
        if len(content) != upload["size"] or hashlib.sha256(content).hexdigest() != upload["oid"]:
            return 400, {"error": f"BadDigest: content does not hash to {upload['oid']} / size {upload['size']}"}, {}
        self.lfs_objects[upload["oid"]] = content
        return 200, None, {"ETag": f'"{upload["oid"][:32]}"'}

    def _commit(self, repo: FakeRepo, raw: bytes) -> tuple[int, Any, dict]:
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            return 400, {"error": "missing commit header"}, {}
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.sha:
            return 412, {"error": "A commit has happened since. Please refresh and try again."}, {}
        files, lfs = dict(repo.files), set(repo.lfs)
        added, deleted = [], []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
                added.append(value["path"])
            elif key == "lfsFile":
                content = self.lfs_objects.get(value["oid"])
                if content is None:
                    return 400, {"error": f"Your push was rejected because an LFS pointer pointed to a file that does "
                                          f"not exist ({value['path']}, oid {value['oid']})"}, {}
                files[value["path"]] = content
                lfs.add(value["path"])
                added.append(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return 404, {"error": f"A file with this name doesn't exist: {value['path']}"}, \
                        {"X-Error-Code": "EntryNotFound"}
                del files[value["path"]]
                lfs.discard(value["path"])
                deleted.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for name in [n for n in files if n.startswith(prefix)]:
                    del files[name]
                    lfs.discard(name)
                    deleted.append(name)
            elif key != "header":
                return 400, {"error": f"this local Hub does not take {key!r} operations"}, {}
        self.transfers["commit"] += len(raw)
        oid = repo._commit(header.get("summary") or "", files, lfs, added, deleted)
        return 200, {"commitUrl": f"{self._url(repo)}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}, {}


def serve_hub(*, token: str, user: str = "fake-user", **kwargs: Any) -> FakeHub:
    return FakeHub(token=token, user=user, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Run the local Hub until Ctrl-C (or SIGTERM); the token it accepts is read from $HF_TOKEN."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fakeapi.hub_api", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8020)
    parser.add_argument("--user", default="fake-user")
    parser.add_argument("--multipart-mb", type=float, default=16.0, help="objects above this go multipart")
    parser.add_argument("--chunk-mb", type=float, default=8.0)
    args = parser.parse_args(argv)
    token = os.environ.get("HF_TOKEN")
    if not token:
        sys.exit("set HF_TOKEN to the token this local Hub should accept")
    with serve_hub(token=token, user=args.user, port=args.port, echo=True,
                   multipart_threshold=int(args.multipart_mb * 2**20), chunk_size=int(args.chunk_mb * 2**20)) as hub:
        print(f"local Hub at {hub.endpoint} for user {args.user}; client env: HF_ENDPOINT={hub.endpoint} "
              f"HF_HUB_DISABLE_XET=1 (and the same HF_TOKEN)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
