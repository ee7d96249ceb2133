"""``HubResource``: upload a folder to the Hugging Face Hub with a generated card, private by default.

The token is read from the environment variable named by ``token_env`` at call time; only that name is
configuration, so it never appears in the UI, logs or metadata. Without a token nothing is sent and the
result says so (``uploaded=False, reason="HF_TOKEN not set"``). A failed upload raises ``HubUploadError``
(with any token text removed from the message) rather than reporting a success it did not have.

What the Hub does, and how an upload goes (huggingface_hub 2.4.0):

* a bare repo name (no ``DISTILLERY_HF_NAMESPACE``) lands in the token owner's namespace: ``create_repo("name")``
  makes ``user/name`` and returns its URL, and every later request uses that qualified id (``full_repo_id``
  also asks ``whoami`` so a card rendered before the upload names ``user/name``);
* ``private`` only applies when the repo is created; for one that exists the Hub keeps its visibility. The
  result reports the repo's real visibility (``repo_info``), and an upload configured private into a repo that
  is public is refused (HubUploadError) rather than published;
* files and card go in ONE commit (``create_commit``), which also deletes the repo's files that are not in
  this upload (a GGUF of another quantization from an earlier run; ``.gitattributes`` is kept): the repo holds
  exactly this run's files, and a failed commit leaves the previous revision whole;
* a Space needs ``space_sdk`` (gradio, streamlit, docker or static) to be created: without one it is refused
  before anything is sent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import dagster as dg
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

CARD_NAME = "README.md"
KEEP_REMOTE = {".gitattributes"}  # never deleted as stale: the Hub's own LFS rules
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
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
        key = (self.endpoint, hashlib.sha256(token.encode()).hexdigest())
        if key not in _WHOAMI:
            try:
                _WHOAMI[key] = str(HfApi(endpoint=self.endpoint, token=token).whoami()["name"])
            except Exception:  # offline, or a token without read scope: create_repo still qualifies the id
                return repo_id
        return f"{_WHOAMI[key]}/{repo_id}"

    def upload_folder(
        self,
        folder: Path | str,
        repo_id: str,
        repo_type: str = "model",
        card_markdown: str | None = None,
        commit_message: str | None = None,
        space_sdk: str | None = None,
    ) -> dict[str, Any]:
        """Create the repository if needed (private unless configured otherwise), then ONE commit: every file
        in ``folder``, ``card_markdown`` (when given) as README.md, and the deletion of the repo's other files.
        Returns ``{uploaded, reason, url, repo_id, files, private, deleted, commit}`` (``repo_id`` qualified,
        ``private`` the repo's real visibility once uploaded)."""
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
        files = sorted({*local, CARD_NAME}) if card_markdown is not None else local
        result: dict[str, Any] = {"uploaded": False, "reason": None, "url": None, "repo_id": repo_id,
                                  "files": files, "private": self.private, "deleted": [], "commit": None}
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
        try:
            repo_url = api.create_repo(full_id, repo_type=repo_type, private=self.private, exist_ok=True,
                                       space_sdk=space_sdk if repo_type == "space" else None)
            full_id = repo_url.repo_id or full_id  # a bare name: the Hub put it under the token's user
            result["repo_id"] = full_id
            private = bool(api.repo_info(full_id, repo_type=repo_type).private)
            result["private"] = private
            if self.private and not private:
                raise HubUploadError(f"Hub upload to {full_id} ({repo_type}) refused: the repo exists and is "
                                     "public, and this upload is configured private (the Hub keeps an existing "
                                     "repo's visibility). Make the repo private on the Hub, or set "
                                     "DISTILLERY_HF_PUBLIC=1 to publish there.")
            stale = sorted(set(api.list_repo_files(full_id, repo_type=repo_type)) - set(files) - KEEP_REMOTE)
            operations: list[Any] = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel))
                                     for rel in local]
            if card_markdown is not None:
                operations.append(CommitOperationAdd(path_in_repo=CARD_NAME,
                                                     path_or_fileobj=card_markdown.encode("utf-8")))
            operations += [CommitOperationDelete(path_in_repo=rel) for rel in stale]
            commit = api.create_commit(full_id, operations, repo_type=repo_type,
                                       commit_message=commit_message or f"Upload {folder.name} from Distillery")
        except HubUploadError:
            raise
        except Exception as exc:  # the Hub client raises many types; report one, without the token
            message = str(exc).replace(token, "***")
            raise HubUploadError(f"Hub upload to {full_id} ({repo_type}) failed: {type(exc).__name__}: "
                                 f"{message}") from None
        result.update(uploaded=True, reason="uploaded", url=str(repo_url), deleted=stale,
                      commit=getattr(commit, "oid", None))
        return result
