"""``HubResource``: upload a folder to the Hugging Face Hub with a generated card, private by default.

The token is read from the environment variable named by ``token_env`` at call time; only that name is
configuration, so it never appears in the UI, logs or metadata. Without a token nothing is sent and the
result says so (``uploaded=False, reason="HF_TOKEN not set"``). A failed upload raises ``HubUploadError``
(with any token text removed from the message) rather than reporting a success it did not have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from huggingface_hub import HfApi

CARD_NAME = "README.md"


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
        if "/" in repo_id or not self.namespace:
            return repo_id
        return f"{self.namespace}/{repo_id}"

    def upload_folder(
        self,
        folder: Path | str,
        repo_id: str,
        repo_type: str = "model",
        card_markdown: str | None = None,
        commit_message: str | None = None,
    ) -> dict[str, Any]:
        """Create the repository if needed (private unless configured otherwise), upload every file in
        ``folder`` and, when given, ``card_markdown`` as README.md. Returns
        ``{uploaded, reason, url, repo_id, files, private}``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Hub upload: folder {folder} does not exist")
        if repo_type not in ("model", "dataset", "space"):
            raise ValueError(f"Hub upload: repo_type must be model, dataset or space, not {repo_type!r}")
        full_id = self.full_repo_id(repo_id)
        files = _folder_files(folder)
        if card_markdown is not None:
            files = sorted({*files, CARD_NAME})
        result: dict[str, Any] = {"uploaded": False, "reason": None, "url": None, "repo_id": full_id,
                                  "files": files, "private": self.private}
        token = os.environ.get(self.token_env)
        if not token:
            result["reason"] = f"{self.token_env} not set"
            return result
        if not files:
            result["reason"] = f"folder {folder} is empty"
            return result
        api = HfApi(endpoint=self.endpoint, token=token)
        try:
            repo_url = api.create_repo(full_id, repo_type=repo_type, private=self.private, exist_ok=True)
            api.upload_folder(
                repo_id=full_id, folder_path=folder, repo_type=repo_type,
                commit_message=commit_message or f"Upload {folder.name} from Distillery",
                ignore_patterns=[CARD_NAME] if card_markdown is not None else None,
            )
            if card_markdown is not None:
                api.upload_file(path_or_fileobj=card_markdown.encode("utf-8"), path_in_repo=CARD_NAME,
                                repo_id=full_id, repo_type=repo_type, commit_message="Update card")
        except Exception as exc:  # the Hub client raises many types; report one, without the token
            message = str(exc).replace(token, "***")
            raise HubUploadError(f"Hub upload to {full_id} ({repo_type}) failed: {type(exc).__name__}: "
                                 f"{message}") from None
        result.update(uploaded=True, reason="uploaded", url=str(repo_url))
        return result
