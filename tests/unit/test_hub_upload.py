"""HubResource against a fake HfApi: private repo, all files, card as README.md, token never leaked."""

import logging

import pytest

import resources.hub as hub_module
from resources.hub import HubResource, HubUploadError

TOKEN = "hf_SECRETsecretSECRET123"


class FakeApi:
    instances: list["FakeApi"] = []
    fail_with: Exception | None = None

    def __init__(self, endpoint=None, token=None):
        self.endpoint, self.token, self.calls = endpoint, token, []
        FakeApi.instances.append(self)

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        if FakeApi.fail_with:
            raise FakeApi.fail_with
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, ignore_patterns=None):
        sent = sorted(p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, repo_type, sent, ignore_patterns))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, commit_message=None):
        self.calls.append(("upload_file", repo_id, repo_type, path_in_repo, path_or_fileobj.decode()))


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.instances, FakeApi.fail_with = [], None
    monkeypatch.setattr(hub_module, "HfApi", FakeApi)
    return FakeApi


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "poet_gguf"
    (d / "sub").mkdir(parents=True)
    (d / "poet.gguf").write_bytes(b"GGUF")
    (d / "sub" / "notes.txt").write_text("n")
    return d


def test_without_token_nothing_is_sent(fake_api, folder):
    out = HubResource().upload_folder(folder, "me/poet", card_markdown="# card")
    assert out == {"uploaded": False, "reason": "HF_TOKEN not set", "url": None, "repo_id": "me/poet",
                   "files": ["README.md", "poet.gguf", "sub/notes.txt"], "private": True}
    assert fake_api.instances == []


def test_upload_creates_private_repo_sends_files_and_card(fake_api, folder, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    hub = HubResource(namespace="distillery-org")
    out = hub.upload_folder(folder, "poet", repo_type="model", card_markdown="---\nlicense: mit\n---\n# Poet\n")
    [api] = fake_api.instances
    assert api.token == TOKEN
    assert api.calls == [
        ("create_repo", "distillery-org/poet", "model", True, True),
        ("upload_folder", "distillery-org/poet", "model", ["poet.gguf", "sub/notes.txt"], ["README.md"]),
        ("upload_file", "distillery-org/poet", "model", "README.md", "---\nlicense: mit\n---\n# Poet\n"),
    ]
    assert out["uploaded"] is True and out["url"] == "https://hub.example/distillery-org/poet"
    assert TOKEN not in repr(out) and TOKEN not in caplog.text
    assert TOKEN not in repr(hub) and TOKEN not in str(hub.model_dump())


def test_public_and_dataset_options(fake_api, folder, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    monkeypatch.setenv("DISTILLERY_HF_PUBLIC", "1")
    hub = HubResource.from_env().model_copy(update={"token_env": "MY_TOKEN"})
    hub.upload_folder(folder, "me/data", repo_type="dataset")
    [api] = fake_api.instances
    assert api.calls[0] == ("create_repo", "me/data", "dataset", False, True)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]  # no card given, none sent


def test_failure_raises_with_repo_named_and_token_scrubbed(fake_api, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_api.fail_with = RuntimeError(f"401 Unauthorized for token {TOKEN}")
    with pytest.raises(HubUploadError) as info:
        HubResource().upload_folder(folder, "me/poet")
    assert "me/poet" in str(info.value) and TOKEN not in str(info.value) and "***" in str(info.value)


def test_bad_arguments_are_named(fake_api, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        HubResource().upload_folder(tmp_path / "missing", "me/x")
    with pytest.raises(ValueError, match="repo_type"):
        HubResource().upload_folder(tmp_path, "me/x", repo_type="weights")
