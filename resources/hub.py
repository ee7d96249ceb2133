"""``HubResource``: upload a folder to the Hugging Face Hub with a generated card, private by default.

The token is read from the environment variable named by ``token_env`` at call time; only that name is
configuration, so it never appears in the UI, logs, metadata or the catalogue. Without a token nothing is sent
and the result says so (``uploaded=False, reason="HF_TOKEN not set"``). A failed upload raises
``HubUploadError`` naming the repo and the revision the repo is still at (any token text removed) rather than
reporting a success it did not have.

What the Hub does, and how an upload goes (huggingface_hub 2.4.0):

* a bare repo name (no ``DISTILLERY_HF_NAMESPACE``) lands in the token owner's namespace: ``create_repo("name")``
  makes ``user/name`` and returns its URL, and every later request uses that qualified id (``full_repo_id``
  also asks ``whoami`` so a card rendered before the upload names ``user/name``);
* ``private`` only applies when the repo is created; for one that exists the Hub keeps its visibility. The
  result reports the repo's real visibility (``repo_info``), and an upload configured private into a repo that
  is public is refused (HubUploadError) rather than published;
* the repo's files at its head are listed with their ids (``list_repo_tree``: an LFS file's sha256, a git
  blob id otherwise) and compared with the local files' sha256 (git blob id for a small text file): when the
  head already holds exactly these files, nothing is sent (``skipped``, ``revision`` the head that holds them);
* otherwise the changed files and card go in ONE commit (``create_commit`` with ``parent_commit`` = the head
  listed, so a commit made meanwhile is refused, not overwritten), which also deletes the repo's files that are
  not in this upload (``.gitattributes`` is kept): the repo holds exactly this run's files. Weights travel as
  git LFS objects (the Xet transfer when ``hf_xet`` is installed) before the commit; a failure anywhere before
  the commit lands leaves the branch at its old revision (the Hub applies a commit whole or not at all);
* after the commit the new revision is listed again and every file's id compared with the local sha256: a
  file that arrived different is a HubUploadError;
* a Space needs ``space_sdk`` (gradio, streamlit, docker or static) to be created: without one it is refused
  before anything is sent.

``record_upload(context, catalog, result)`` is the assets' one call after ``upload_folder``: a ``runs`` row in
the catalogue (kind ``hub_upload``: repo, revision, each file's sha256) and the Dagster metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash

from distillery_assets.catalog import Catalog
from distillery_assets.io.hashing import file_digest, sha256_bytes, sha256_text
from distillery_assets.markdown import human_size, md_table

CARD_NAME = "README.md"
KEEP_REMOTE = {".gitattributes"}  # never deleted as stale: the Hub's own LFS rules
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
DEFAULT_ENDPOINT = "https://huggingface.co"
_WHOAMI: dict[tuple[str | None, str], str] = {}  # (endpoint, sha256 of the token) -> user name


class HubUploadError(RuntimeError):
    """The Hub refused or failed an upload; the message names the repository."""


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class HubResource(dg.ConfigurableResource):
    """Hugging Face Hub uploads. Configure with env vars: HF_TOKEN (secret, read at call time),
    DISTILLERY_HF_NAMESPACE (user or org for bare repo names), DISTILLERY_HF_PUBLIC=1 to publish publicly,
    HF_ENDPOINT (a mirror or private Hub)."""

    token_env: str = "HF_TOKEN"
    private: bool = True
    namespace: str | None = None
    endpoint: str | None = None

    @classmethod
    def from_env(cls) -> HubResource:
        return cls(
            namespace=os.environ.get("DISTILLERY_HF_NAMESPACE") or None,
            private=os.environ.get("DISTILLERY_HF_PUBLIC", "0") not in ("1", "true", "yes"),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )

    def full_repo_id(self, repo_id: str) -> str:
        """``namespace/name``: as given, else under ``namespace``, else under the token's user (``whoami``; the
        bare name when there is no token or the Hub cannot be asked: the upload then takes the id create_repo
        returns)."""
        if "/" in repo_id:
            return repo_id
        if self.namespace:
            return f"{self.namespace}/{repo_id}"
        token = os.environ.get(self.token_env)
        if not token:
            return repo_id
        key = (self.endpoint, sha256_text(token))
        if key not in _WHOAMI:
            try:
                _WHOAMI[key] = str(HfApi(endpoint=self.endpoint, token=token).whoami()["name"])
            except Exception:  # offline, or a token without read scope: create_repo still qualifies the id
                return repo_id
        return f"{_WHOAMI[key]}/{repo_id}"

    def api_endpoint(self) -> str:
        """The Hub this resource talks to: ``endpoint``, else huggingface_hub's (``HF_ENDPOINT`` or the Hub)."""
        from huggingface_hub import constants

        return (self.endpoint or constants.ENDPOINT or DEFAULT_ENDPOINT).rstrip("/")

    def upload_folder(
        self,
        folder: Path | str,
        repo_id: str,
        repo_type: str = "model",
        card_markdown: str | None = None,
        commit_message: str | None = None,
        space_sdk: str | None = None,
    ) -> dict[str, Any]:
        """Create the repository if needed (private unless configured otherwise); when its head does not hold
        exactly these files, ONE commit: the changed files of ``folder``, ``card_markdown`` (when given) as
        README.md, and the deletion of the repo's other files. Returns ``{uploaded, skipped, reason, url,
        repo_id, repo_type, endpoint, files, private, changed, deleted, commit, revision}``: ``files`` one
        ``{path, sha256, bytes, lfs}`` per file (``lfs`` as the Hub stores it, None before it is asked),
        ``changed`` the paths this call sent, ``revision`` the commit that holds the files (None when nothing
        reached the Hub), ``commit`` the commit this call made (None when skipped)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Hub upload: folder {folder} does not exist")
        if repo_type not in ("model", "dataset", "space"):
            raise ValueError(f"Hub upload: repo_type must be model, dataset or space, not {repo_type!r}")
        if repo_type == "space" and space_sdk not in SPACE_SDKS:
            raise ValueError(f"Hub upload: a Space needs space_sdk, one of {', '.join(SPACE_SDKS)} "
                             f"(the Hub cannot create a Space without one); got {space_sdk!r}")
        local = _folder_files(folder)
        if card_markdown is not None:
            local = [f for f in local if f != CARD_NAME]  # the card replaces a README.md in the folder
        card = card_markdown.encode("utf-8") if card_markdown is not None else None
        sources: dict[str, Path | bytes] = {rel: folder / rel for rel in local}
        if card is not None:
            sources[CARD_NAME] = card
        files = [_local_file(rel, sources[rel]) for rel in sorted(sources)]
        result: dict[str, Any] = {"uploaded": False, "skipped": False, "reason": None, "url": None,
                                  "repo_id": repo_id, "repo_type": repo_type, "endpoint": self.api_endpoint(),
                                  "files": files, "private": self.private, "changed": [], "deleted": [],
                                  "commit": None, "revision": None}
        token = os.environ.get(self.token_env)
        if not token:
            result["repo_id"] = self.full_repo_id(repo_id)
            result["reason"] = f"{self.token_env} not set"
            return result
        if not files:
            result["reason"] = f"folder {folder} is empty"
            return result
        full_id = self.full_repo_id(repo_id)
        api = HfApi(endpoint=self.endpoint, token=token)
        head = None
        try:
            repo_url = api.create_repo(full_id, repo_type=repo_type, private=self.private, exist_ok=True,
                                       space_sdk=space_sdk if repo_type == "space" else None)
            full_id = repo_url.repo_id or full_id  # a bare name: the Hub put it under the token's user
            result.update(repo_id=full_id, url=str(repo_url))
            info = api.repo_info(full_id, repo_type=repo_type)
            private, head = bool(info.private), info.sha
            result["private"] = private
            if self.private and not private:
                raise HubUploadError(f"Hub upload to {full_id} ({repo_type}) refused: the repo exists and is "
                                     "public, and this upload is configured private (the Hub keeps an existing "
                                     "repo's visibility). Make the repo private on the Hub, or set "
                                     "DISTILLERY_HF_PUBLIC=1 to publish there.")
            remote = _remote_files(api, full_id, repo_type, head)
            wanted = {f["path"] for f in files}
            changed = [f["path"] for f in files if not _same(f, sources[f["path"]], remote.get(f["path"]))]
            stale = sorted(set(remote) - wanted - KEEP_REMOTE)
            if not changed and not stale:
                _mark_lfs(files, remote)
                result.update(skipped=True, revision=head,
                              reason=f"unchanged: revision {head[:12]} already holds these {len(files)} files")
                return result
            operations: list[Any] = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=(
                sources[rel] if isinstance(sources[rel], bytes) else str(sources[rel]))) for rel in changed]
            operations += [CommitOperationDelete(path_in_repo=rel) for rel in stale]
            commit = api.create_commit(full_id, operations, repo_type=repo_type, parent_commit=head,
                                       commit_message=commit_message or f"Upload {folder.name} from Distillery")
            arrived = _remote_files(api, full_id, repo_type, commit.oid)
            wrong = [f["path"] for f in files if not _same(f, sources[f["path"]], arrived.get(f["path"]))]
            if wrong:
                raise HubUploadError(f"Hub upload to {full_id} ({repo_type}): commit {commit.oid} holds "
                                     f"{', '.join(wrong)} with other content than sent (sha256 differs)")
            _mark_lfs(files, arrived)
        except HubUploadError:
            raise
        except Exception as exc:  # the Hub client raises many types; report one, without the token
            message = f"{type(exc).__name__}: {exc}".replace(token, "***")
            if "xet" in message.lower():
                message += (f" (the Xet transfer of hf_xet, huggingface_hub's default when installed, was refused "
                            f"by {self.api_endpoint()}; set HF_HUB_DISABLE_XET=1 to upload through git LFS)")
            raise HubUploadError(f"Hub upload to {full_id} ({repo_type}) failed: {message}. "
                                 f"{_still_at(api, full_id, repo_type, head)}".replace(token, "***")) from None
        result.update(uploaded=True, reason="uploaded", changed=changed, deleted=stale, commit=commit.oid,
                      revision=commit.oid)
        return result


def _local_file(rel: str, source: Path | bytes) -> dict[str, Any]:
    if isinstance(source, bytes):
        return {"path": rel, "sha256": sha256_bytes(source), "bytes": len(source), "lfs": None}
    sha256, size, _ = file_digest(source)
    return {"path": rel, "sha256": sha256, "bytes": size, "lfs": None}


def _remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str | None) -> dict[str, RepoFile]:
    return {f.path: f for f in api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True, revision=revision)
            if isinstance(f, RepoFile)}


def _same(local: dict[str, Any], source: Path | bytes, remote: RepoFile | None) -> bool:
    """Whether the Hub's file is the local one: an LFS file by its sha256 (the LFS oid), a file kept in git by
    its git blob id (such a file is small text: the Hub sends larger or binary files to LFS)."""
    if remote is None or remote.size != local["bytes"]:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == local["sha256"]
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return remote.blob_id == git_hash(data)


def _mark_lfs(files: list[dict[str, Any]], remote: dict[str, RepoFile]) -> None:
    for f in files:
        f["lfs"] = remote[f["path"]].lfs is not None


def _still_at(api: HfApi, repo_id: str, repo_type: str, head: str | None) -> str:
    """What a failed upload left: the branch's revision now, against the one before it."""
    if head is None:
        return "Nothing was committed."
    try:
        now = api.repo_info(repo_id, repo_type=repo_type).sha
    except Exception as exc:
        return f"Nothing was committed by this call; the repo's revision could not be read back ({type(exc).__name__})."
    if now == head:
        return f"Nothing was committed: the repo is still at revision {head}."
    return f"The repo moved from {head} to {now} meanwhile (another writer): check it on the Hub."


def _files_table(result: dict[str, Any]) -> str:
    changed = set(result.get("changed") or [])
    rows = [(f["path"], f["sha256"], human_size(f["bytes"]),
             "" if f["lfs"] is None else ("LFS" if f["lfs"] else "git"),
             "sent" if f["path"] in changed else ("on the Hub" if result.get("revision") else "not sent"))
            for f in result["files"]]
    return md_table(rows, ("path", "sha256", "size", "stored", "this run"), align="llrll")


def record_upload(context: dg.AssetExecutionContext, catalog: Catalog, result: dict[str, Any]) -> dict[str, Any]:
    """After ``upload_folder``: log what happened, record it in the catalogue when the Hub was reached (a
    ``runs`` row, kind ``hub_upload``, name the asset key, with the repo, revision and every file's sha256),
    and return the asset's metadata (no token in any of it: the result never holds one)."""
    partition = context.partition_key if context.has_partition_key else None
    asset_key = context.asset_key.to_user_string()
    files = result["files"]
    if result.get("revision"):
        catalog.record_run(
            kind="hub_upload", name=asset_key, partition=partition, run_id=context.run_id,
            params={"repo_id": result["repo_id"], "repo_type": result["repo_type"], "endpoint": result["endpoint"],
                    "private": result["private"]},
            metrics={"revision": result["revision"], "uploaded": result["uploaded"], "skipped": result["skipped"],
                     "files": [{k: f[k] for k in ("path", "sha256", "bytes", "lfs")} for f in files],
                     "changed": result["changed"], "deleted": result["deleted"]})
    if result["uploaded"]:
        context.log.info(f"uploaded to {result['repo_id']} at {result['endpoint']}: revision {result['revision']}, "
                         f"{len(result['changed'])} of {len(files)} files sent, {len(result['deleted'])} deleted")
    elif result["skipped"]:
        context.log.info(f"{result['repo_id']} at {result['endpoint']}: {result['reason']}; nothing sent")
    else:
        context.log.info(f"not uploaded to the Hub ({result['reason']}): nothing sent")
    return {
        "uploaded": bool(result["uploaded"]), "skipped": bool(result["skipped"]),
        "reason": str(result["reason"] or ""), "url": str(result["url"] or ""), "repo_id": str(result["repo_id"]),
        "private": bool(result["private"]), "hub_endpoint": str(result["endpoint"]),
        "hub_revision": str(result["revision"] or ""),
        "hub_files": dg.MetadataValue.md(_files_table(result)),
        "hub_files_sha256": dg.MetadataValue.json({f["path"]: f["sha256"] for f in files}),
        "hub_files_sent": len(result["changed"]),
        "hub_bytes_sent": sum(f["bytes"] for f in files if f["path"] in set(result["changed"])),
        "hub_deleted": dg.MetadataValue.json(result["deleted"]),
    }
