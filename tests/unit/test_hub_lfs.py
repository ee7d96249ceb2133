"""Uploads that carry weights, through the real huggingface_hub client (git LFS: the basic transfer and the
multipart one) against the local Hub on 127.0.0.1 (tests/support/fakeapi/hub_api.py): every file arrives with
its sha256, the repo is private, a second upload sends nothing, only what changed is sent, and a failure at any
stage (pre-upload, LFS batch, a part, the multipart completion, the verify call, the commit, a commit made
meanwhile) is a named HubUploadError that leaves the repo at its old revision; the token is in no log."""

import hashlib
import logging
import os

import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi

import resources.hub as hub_module
from resources.hub import HubResource, HubUploadError
from tests.support.fakeapi.hub_api import serve_hub

TOKEN = "hf_LfsTokenNeverLogged0123456789"
CARD = "---\nlicense: apache-2.0\n---\n# Model\n"
MB = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def weights(tmp_path):
    folder = tmp_path / "upload"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "model-Q8_0.gguf").write_bytes(os.urandom(3 * MB + 123))  # multipart: 4 parts
    (folder / "transformer" / "model.json").write_text('{"d_model": 64}\n')
    (folder / "model.pt").write_bytes(os.urandom(200_000))  # LFS by .gitattributes, one PUT
    (folder / "tokenizer.json").write_text('{"vocab": {}}\n')  # text: stays in git
    return folder


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_module, "_WHOAMI", {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the local Hub speaks LFS, not Xet
    with serve_hub(token=TOKEN, user="ada", multipart_threshold=1 * MB, chunk_size=1 * MB) as server:
        yield server


def _local(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_weights_arrive_by_lfs_with_their_sha256_in_a_private_repo(hub, weights, caplog):
    caplog.set_level(logging.DEBUG)
    out = HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)
    repo = hub.repo("ada/thyme")
    assert out["uploaded"] and not out["skipped"] and repo.private and out["private"] is True
    expected = {**_local(weights), "README.md": _sha(CARD.encode())}
    assert {f["path"]: f["sha256"] for f in out["files"]} == expected
    assert {p: repo.sha256(p) for p in expected} == expected  # the bytes the Hub holds
    assert repo.lfs == {"transformer/model-Q8_0.gguf", "model.pt"}
    assert {f["path"]: f["lfs"] for f in out["files"]} == {
        "README.md": False, "model.pt": True, "tokenizer.json": False, "transformer/model-Q8_0.gguf": True,
        "transformer/model.json": False}
    # the Hub's own listing, read through the client, names each weight file by its sha256 (the LFS oid)
    listed = {f.path: f for f in HfApi(endpoint=hub.endpoint, token=TOKEN).list_repo_tree(
        "ada/thyme", recursive=True, revision=out["revision"]) if hasattr(f, "lfs")}
    assert {p: f.lfs.sha256 for p, f in listed.items() if f.lfs} == {p: expected[p] for p in repo.lfs}
    assert out["revision"] == repo.sha == out["commit"]
    gguf = weights / "transformer" / "model-Q8_0.gguf"
    assert hub.count("PUT", r"^/_lfs/") == 4 + 1  # the GGUF in 4 parts, model.pt in one PUT
    assert hub.count("POST", r"^/_lfs/") == 1  # the multipart completion
    assert hub.transfers["lfs_upload"] == gguf.stat().st_size + (weights / "model.pt").stat().st_size
    assert TOKEN not in caplog.text and TOKEN not in repr(out)


def test_a_second_upload_sends_nothing_and_names_the_revision_that_holds_the_files(hub, weights):
    resource = HubResource(endpoint=hub.endpoint)
    first = resource.upload_folder(weights, "thyme", card_markdown=CARD)
    before, commits = len(hub.requests), len(hub.repo("ada/thyme").commits)
    second = resource.upload_folder(weights, "thyme", card_markdown=CARD)
    assert second["skipped"] and not second["uploaded"] and second["changed"] == []
    assert second["revision"] == first["revision"] and second["commit"] is None
    assert "unchanged" in second["reason"] and first["revision"][:12] in second["reason"]
    assert {f["path"]: f["sha256"] for f in second["files"]} == {f["path"]: f["sha256"] for f in first["files"]}
    sent = hub.requests[before:]
    assert len(hub.repo("ada/thyme").commits) == commits
    assert not [r for r in sent if r[0] in ("PUT", "POST") and r[1] != "/api/repos/create"], sent  # reads only


def test_only_what_changed_is_sent_and_stale_files_go_in_the_same_commit(hub, weights):
    resource = HubResource(endpoint=hub.endpoint)
    resource.upload_folder(weights, "thyme", card_markdown=CARD)
    sent_before = hub.transfers["lfs_upload"]
    (weights / "model.pt").write_bytes(os.urandom(150_000))
    (weights / "tokenizer.json").unlink()
    out = resource.upload_folder(weights, "thyme", card_markdown=CARD)
    assert out["uploaded"] and out["changed"] == ["model.pt"] and out["deleted"] == ["tokenizer.json"]
    assert hub.transfers["lfs_upload"] - sent_before == 150_000  # the 3 MB GGUF was not sent again
    last = hub.repo("ada/thyme").commits[-1]
    assert last["added"] == ["model.pt"] and last["deleted"] == ["tokenizer.json"]
    assert hub.repo("ada/thyme").sha256("model.pt") == _sha((weights / "model.pt").read_bytes())


@pytest.mark.parametrize(("stage", "status"), [
    ("preupload", 403), ("lfs_batch", 403), ("lfs_upload", 403), ("lfs_complete", 400), ("lfs_verify", 403),
    ("commit", 500),
])
def test_a_failed_upload_is_named_and_leaves_no_revision(hub, weights, stage, status, caplog):
    caplog.set_level(logging.DEBUG)
    resource = HubResource(endpoint=hub.endpoint)
    resource.upload_folder(weights, "thyme", card_markdown=CARD)  # a first revision to keep
    repo = hub.repo("ada/thyme")
    head, files, commits = repo.sha, dict(repo.files), len(repo.commits)
    (weights / "transformer" / "model-Q8_0.gguf").write_bytes(os.urandom(2 * MB + 7))
    (weights / "tokenizer.json").write_text('{"vocab": {"a": 0}}\n')
    hub.fail(stage, status)
    with pytest.raises(HubUploadError) as info:
        resource.upload_folder(weights, "thyme", card_markdown=CARD)
    message = str(info.value)
    assert "ada/thyme" in message and f"still at revision {head}" in message, message
    assert repo.sha == head and repo.files == files and len(repo.commits) == commits  # nothing half-made
    out = resource.upload_folder(weights, "thyme", card_markdown=CARD)  # the next run completes it
    assert out["uploaded"] and repo.sha == out["revision"] != head
    assert {p: repo.sha256(p) for p in _local(weights)} == _local(weights)
    assert TOKEN not in message and TOKEN not in caplog.text


def test_a_failure_on_the_first_upload_leaves_only_the_empty_repo(hub, weights):
    hub.fail("lfs_upload", 403)
    with pytest.raises(HubUploadError, match="ada/thyme"):
        HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)
    repo = hub.repo("ada/thyme")
    assert [c["summary"] for c in repo.commits] == ["initial commit"] and sorted(repo.files) == [".gitattributes"]


def test_a_transient_storage_error_is_retried_by_the_client(hub, weights):
    hub.fail("lfs_upload", 503)  # once: huggingface_hub's backoff sends the part again
    out = HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)
    assert out["uploaded"] and hub.count("PUT", r"^/_lfs/") == 4 + 1 + 1


def test_a_commit_made_meanwhile_is_not_overwritten(hub, weights, monkeypatch):
    resource = HubResource(endpoint=hub.endpoint)
    resource.upload_folder(weights, "thyme", card_markdown=CARD)
    listed = hub_module._remote_files

    def another_writer_commits_after_the_listing(api, repo_id, repo_type, revision):
        files = listed(api, repo_id, repo_type, revision)
        HfApi(endpoint=hub.endpoint, token=TOKEN).upload_file(path_or_fileobj=b"theirs", path_in_repo="theirs.txt",
                                                               repo_id=repo_id)
        monkeypatch.setattr(hub_module, "_remote_files", listed)
        return files

    monkeypatch.setattr(hub_module, "_remote_files", another_writer_commits_after_the_listing)
    (weights / "tokenizer.json").write_text('{"vocab": {"b": 1}}\n')
    with pytest.raises(HubUploadError, match="moved from"):
        resource.upload_folder(weights, "thyme", card_markdown=CARD)
    assert hub.repo("ada/thyme").files["theirs.txt"] == b"theirs"  # their commit stands


def test_a_file_that_arrives_different_is_a_named_failure(hub, weights, monkeypatch):
    from tests.support.fakeapi import hub_api

    real = hub_api.FakeRepo._commit

    def corrupting(self, summary, files, lfs, added, deleted):
        files = {**files, "tokenizer.json": b'{"vocab": "garbled"}\n'}
        return real(self, summary, files, lfs, added, deleted)

    monkeypatch.setattr(hub_api.FakeRepo, "_commit", corrupting)
    with pytest.raises(HubUploadError, match="tokenizer.json with other content"):
        HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)


def test_without_hf_hub_disable_xet_the_local_hub_failure_says_what_to_set(hub, weights, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
    pytest.importorskip("hf_xet")
    with pytest.raises(HubUploadError, match="HF_HUB_DISABLE_XET=1"):
        HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)
    assert [c["summary"] for c in hub.repo("ada/thyme").commits] == ["initial commit"]


def test_the_local_hub_refuses_what_the_hub_refuses(hub):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with pytest.raises(Exception, match="Invalid user token"):  # the 401 as huggingface_hub words it
        HfApi(endpoint=hub.endpoint, token="hf_wrong").whoami()
    api.create_repo("ada/r")
    assert hub.repo("ada/r").private is False  # the Hub's default for a user: public unless asked
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.lfs import UploadInfo

    op = CommitOperationAdd(path_in_repo="w.bin", path_or_fileobj=b"\0" * 10)
    op._upload_mode, op._is_uploaded = "lfs", True  # claim an LFS object that was never uploaded
    op.upload_info = UploadInfo.from_bytes(b"\0" * 10)
    with pytest.raises(Exception, match="LFS pointer pointed to a file that does not exist"):
        api.create_commit("ada/r", [op], commit_message="dangling pointer")
    assert [c["summary"] for c in hub.repo("ada/r").commits] == ["initial commit"]


def test_what_was_uploaded_downloads_back_through_the_client_with_the_same_sha256(hub, weights, tmp_path):
    from huggingface_hub import hf_hub_download

    out = HubResource(endpoint=hub.endpoint).upload_folder(weights, "thyme", card_markdown=CARD)
    for f in out["files"]:
        got = hf_hub_download("ada/thyme", f["path"], revision=out["revision"], endpoint=hub.endpoint, token=TOKEN,
                              cache_dir=tmp_path / "cache")
        assert _sha(open(got, "rb").read()) == f["sha256"], f["path"]
    with pytest.raises(Exception):  # a private repo: nothing without the token
        hf_hub_download("ada/thyme", "model.pt", endpoint=hub.endpoint, token=False, cache_dir=tmp_path / "anon")


def test_the_repo_history_read_through_the_client_has_one_commit_per_upload(hub, weights):
    resource = HubResource(endpoint=hub.endpoint)
    first = resource.upload_folder(weights, "thyme", card_markdown=CARD)
    resource.upload_folder(weights, "thyme", card_markdown=CARD)  # nothing changed: no commit
    (weights / "model.pt").write_bytes(os.urandom(1000))
    third = resource.upload_folder(weights, "thyme", card_markdown=CARD)
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    commits = [c.commit_id for c in api.list_repo_commits("ada/thyme")]
    assert commits[:2] == [third["revision"], first["revision"]] and len(commits) == 3  # + the Hub's initial one
    assert api.list_repo_refs("ada/thyme").branches[0].target_commit == third["revision"]
