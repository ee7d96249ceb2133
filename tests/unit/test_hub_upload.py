"""HubResource through the real huggingface_hub client against a local server that speaks the Hub's HTTP API
(tests/support/fakeapi/hub_api.py): qualified repo ids, the repo's real visibility, one commit with card and
files that also deletes stale files, Spaces without an SDK refused, the token never leaked."""

import hashlib
import logging

import huggingface_hub.constants
import pytest

import resources.hub as hub_module
from resources.hub import HubResource, HubUploadError
from tests.support.fakeapi.hub_api import serve_hub

TOKEN = "hf_SECRETsecretSECRET123"
CARD = "---\nlicense: mit\n---\n# Poet\n"


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "poet_gguf"
    (d / "sub").mkdir(parents=True)
    (d / "poet-Q4_K_M.gguf").write_bytes(b"GGUF-q4")
    (d / "sub" / "notes.txt").write_text("n")
    return d


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_module, "_WHOAMI", {}, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the local Hub speaks LFS, not Xet
    with serve_hub(token=TOKEN, user="ada") as server:
        yield server


def test_without_token_nothing_is_sent(folder, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = HubResource().upload_folder(folder, "me/poet", card_markdown="# card")
    assert {k: v for k, v in out.items() if k not in ("files", "endpoint")} == {
        "uploaded": False, "skipped": False, "reason": "HF_TOKEN not set", "url": None, "repo_id": "me/poet",
        "repo_type": "model", "private": True, "changed": [], "deleted": [], "commit": None, "revision": None}
    assert [f["path"] for f in out["files"]] == ["README.md", "poet-Q4_K_M.gguf", "sub/notes.txt"]
    assert out["files"][1]["sha256"] == hashlib.sha256(b"GGUF-q4").hexdigest()  # known before anything is sent


def test_bare_repo_name_goes_to_the_token_owner_in_one_commit_with_the_card(hub, folder, caplog):
    caplog.set_level(logging.DEBUG)
    resource = HubResource(endpoint=hub.endpoint)  # no DISTILLERY_HF_NAMESPACE
    assert resource.full_repo_id("poet") == "ada/poet"  # whoami: what a card rendered before the upload names
    out = resource.upload_folder(folder, "poet", card_markdown=CARD)
    repo = hub.repo("ada/poet")
    assert out["uploaded"] and out["repo_id"] == "ada/poet" and out["url"] == f"{hub.endpoint}/ada/poet"
    assert out["private"] is True and repo.private is True
    assert sorted(repo.files) == [".gitattributes", "README.md", "poet-Q4_K_M.gguf", "sub/notes.txt"]
    assert repo.files["README.md"].decode() == CARD and repo.files["poet-Q4_K_M.gguf"] == b"GGUF-q4"
    assert len(repo.commits) == 2 and out["commit"] == repo.commits[-1]["oid"]  # the Hub's initial commit, then ours
    assert sorted(repo.commits[-1]["added"]) == ["README.md", "poet-Q4_K_M.gguf", "sub/notes.txt"]  # one commit
    assert not [p for _, p in hub.requests if p.startswith("/api/models/poet")]  # never the bare id
    assert TOKEN not in repr(out) and TOKEN not in caplog.text and TOKEN not in repr(resource)


def test_reupload_deletes_stale_files_in_the_same_commit_and_keeps_gitattributes(hub, folder):
    resource = HubResource(endpoint=hub.endpoint, namespace="org")
    resource.upload_folder(folder, "poet", card_markdown=CARD)
    (folder / "poet-Q4_K_M.gguf").unlink()
    (folder / "sub" / "notes.txt").unlink()
    (folder / "poet-Q8_0.gguf").write_bytes(b"GGUF-q8")  # another quantization this time
    out = resource.upload_folder(folder, "poet", card_markdown=CARD + "\nv2\n")
    repo = hub.repo("org/poet")
    assert sorted(repo.files) == [".gitattributes", "README.md", "poet-Q8_0.gguf"]
    assert out["deleted"] == ["poet-Q4_K_M.gguf", "sub/notes.txt"]
    assert len(repo.commits) == 3
    last = repo.commits[-1]
    assert sorted(last["added"]) == ["README.md", "poet-Q8_0.gguf"]
    assert sorted(last["deleted"]) == ["poet-Q4_K_M.gguf", "sub/notes.txt"]


def test_an_existing_public_repo_is_not_published_into_when_configured_private(hub, folder):
    hub.add_repo("ada/poet", private=False, files={"old.gguf": b"x"})
    with pytest.raises(HubUploadError, match="exists and is public"):
        HubResource(endpoint=hub.endpoint).upload_folder(folder, "ada/poet", card_markdown=CARD)
    assert sorted(hub.repo("ada/poet").files) == [".gitattributes", "old.gguf"]  # nothing sent
    out = HubResource(endpoint=hub.endpoint, private=False).upload_folder(folder, "ada/poet")
    assert out["uploaded"] and out["private"] is False  # public on purpose: the metadata says so


def test_an_existing_private_repo_reports_private_even_when_public_was_asked(hub, folder):
    hub.add_repo("ada/poet", private=True)
    out = HubResource(endpoint=hub.endpoint, private=False).upload_folder(folder, "ada/poet")
    assert out["uploaded"] and out["private"] is True  # the Hub kept the repo's visibility


def test_dataset_repo(hub, folder, monkeypatch):
    monkeypatch.setenv("DISTILLERY_HF_PUBLIC", "1")
    resource = HubResource.from_env().model_copy(update={"endpoint": hub.endpoint})
    out = resource.upload_folder(folder, "ada/data", repo_type="dataset")
    repo = hub.repo("ada/data", "dataset")
    assert out["url"] == f"{hub.endpoint}/datasets/ada/data" and repo.private is False
    assert "README.md" not in repo.files  # no card given, none sent


def test_a_space_needs_an_sdk(hub, folder):
    resource = HubResource(endpoint=hub.endpoint)
    with pytest.raises(ValueError, match="space_sdk"):
        resource.upload_folder(folder, "demo", repo_type="space")
    assert hub.requests == []  # refused before anything was sent
    out = resource.upload_folder(folder, "demo", repo_type="space", space_sdk="static")
    assert out["uploaded"] and hub.repo("ada/demo", "space").sdk == "static"


def test_failure_raises_with_repo_named_and_token_scrubbed(hub, folder, monkeypatch):
    def boom(self, *a, **kw):
        raise RuntimeError(f"401 Unauthorized for token {TOKEN}")

    monkeypatch.setattr(hub_module.HfApi, "create_commit", boom)
    with pytest.raises(HubUploadError) as info:
        HubResource(endpoint=hub.endpoint).upload_folder(folder, "me/poet")
    assert "me/poet" in str(info.value) and TOKEN not in str(info.value) and "***" in str(info.value)


def test_a_wrong_token_is_a_named_failure(hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubUploadError, match="me/poet"):
        HubResource(endpoint=hub.endpoint).upload_folder(folder, "me/poet")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        HubResource().upload_folder(tmp_path / "missing", "me/x")
    with pytest.raises(ValueError, match="repo_type"):
        HubResource().upload_folder(tmp_path, "me/x", repo_type="weights")
