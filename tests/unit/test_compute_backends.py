"""ComputeResource: the local backend runs a typed step spec in process; the modal backend moves files through
a Volume and calls the deployed function with the dumped spec, then re-validates the dumped result
(exercised here against an in-memory fake of both)."""

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import pytest
from modal.volume import FileEntry, FileEntryType

import distillery_assets.steps as steps_module
from distillery_assets.steps import RelPath, StepResult, StepSpec
from resources.compute import ComputeBackendError, ComputeResource, ModalStepRunner
from resources.modal_app import parse_spec


class ConcatResult(StepResult):
    chars: int
    root_name: str


class ConcatSpec(StepSpec[ConcatResult]):
    """A tiny step of the real shape: reads inputs under root, writes a file and a folder."""

    kind: Literal["concat"] = "concat"
    parts: list[RelPath]
    out: RelPath
    folder: RelPath
    declared: list[str] | None = None  # outputs to demand instead of [out, folder]
    extra: Any = None

    def inputs(self) -> list[str]:
        return list(self.parts)

    def outputs(self) -> list[str]:
        return self.declared if self.declared is not None else [self.out, self.folder]

    def run(self, root: Path) -> ConcatResult:
        text = "".join((root / rel).read_text() for rel in self.parts)
        out = self.path("out", root)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        folder = self.path("folder", root)
        (folder / "nested").mkdir(parents=True, exist_ok=True)
        (folder / "a.txt").write_text("A")
        (folder / "nested" / "b.txt").write_text("B")
        return ConcatResult(chars=len(text), root_name=root.name)


@pytest.fixture
def concat_step(monkeypatch):
    monkeypatch.setitem(steps_module.STEP_KINDS, "concat", ConcatSpec)


@pytest.fixture
def inputs(data_dir):
    (data_dir / "in").mkdir()
    (data_dir / "in" / "one.txt").write_text("hello ")
    (data_dir / "in" / "two.txt").write_text("world")
    return ["in/one.txt", "in/two.txt"]


SPEC = ConcatSpec(parts=["in/one.txt", "in/two.txt"], out="out/joined.txt", folder="out/adapter")


def test_local_runs_step_in_process_against_data_dir(concat_step, inputs, data_dir):
    out = ComputeResource().run_step(SPEC)
    assert out == ConcatResult(chars=11, root_name="data")
    assert (data_dir / "out" / "joined.txt").read_text() == "hello world"


def test_local_errors_name_the_problem(concat_step, inputs, data_dir):
    compute = ComputeResource()
    with pytest.raises(ValueError, match="unknown step 'nope'; known steps: .*concat"):
        parse_spec({"kind": "nope"})
    with pytest.raises(FileNotFoundError, match="inputs missing .*in/three.txt"):
        compute.run_step(SPEC.model_copy(update={"parts": ["in/three.txt"]}))
    with pytest.raises(ComputeBackendError, match="did not produce: out/other.txt"):
        compute.run_step(SPEC.model_copy(update={"declared": ["out/other.txt"]}))
    with pytest.raises(ValueError, match="'\\.\\.' in path name"):
        ConcatSpec(parts=["../etc/passwd"], out="out/x", folder="out/y")
    with pytest.raises(ValueError, match="'\\.\\.' in path name"):
        compute.run_step(SPEC.model_copy(update={"declared": ["../etc/passwd"]}))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        compute.run_step(SPEC.model_copy(update={"extra": object()}))


def test_from_env(monkeypatch):
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "modal")
    monkeypatch.setenv("DISTILLERY_MODAL_GPU", "H100")
    monkeypatch.setenv("DISTILLERY_MODAL_VOLUME", "vol-x")
    c = ComputeResource.from_env()
    assert (c.backend, c.gpu, c.volume, c.modal_app) == ("modal", "H100", "vol-x", "distillery-gpu")
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "cloud")
    with pytest.raises(ValueError, match="'local' or 'modal'"):
        ComputeResource.from_env()


def test_modal_without_credentials_fails_clearly(concat_step, inputs, monkeypatch, tmp_path):
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    import modal.config
    monkeypatch.setattr(modal.config.config, "get", lambda key, **kw: None)
    with pytest.raises(ComputeBackendError, match="MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"):
        ComputeResource(backend="modal").run_step(SPEC)


def test_modal_handles_are_built_lazily_with_gpu_override(monkeypatch, data_dir):
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    runner = ComputeResource(backend="modal", gpu="L4", volume="vol-t").modal_runner()  # no network here
    assert "vol-t" in repr(runner.volume)
    assert runner.root == data_dir


class FakeVolume:
    """In-memory stand-in for modal.Volume: paths without a leading slash, like the real listing."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.uploads: list[str] = []

    @contextlib.contextmanager
    def batch_upload(self, force=False):
        volume = self

        class Batch:
            def put_file(self, local, remote):
                data = local.read() if hasattr(local, "read") else Path(local).read_bytes()
                volume.files[remote.lstrip("/")] = data
                volume.uploads.append(remote)

            def put_directory(self, local, remote):
                for p in Path(local).rglob("*"):
                    if p.is_file():
                        self.put_file(p, f"{remote}/{p.relative_to(local).as_posix()}")

        yield Batch()

    def listdir(self, path, recursive=False):
        key = path.strip("/")
        return [FileEntry(path=k, type=FileEntryType.FILE, mtime=0, size=len(v))
                for k, v in sorted(self.files.items()) if k == key or k.startswith(key + "/")]

    def read_file(self, path):
        if path.strip("/") not in self.files:
            raise FileNotFoundError(path)
        data = self.files[path.strip("/")]
        yield data[:3]
        yield data[3:]


class FakeFunction:
    """Runs the step the way resources/modal_app.py does: against a /vol-like root holding the volume."""

    def __init__(self, volume: FakeVolume, vol_root: Path):
        self.volume, self.vol_root, self.calls = volume, vol_root, []

    def remote(self, spec):
        self.calls.append(json.loads(json.dumps(spec)))  # what crosses the wire is plain JSON
        shutil.rmtree(self.vol_root, ignore_errors=True)
        for rel, data in self.volume.files.items():
            (self.vol_root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.vol_root / rel).write_bytes(data)
        result = parse_spec(spec).run(self.vol_root).model_dump(mode="json")
        for p in self.vol_root.rglob("*"):
            if p.is_file():
                self.volume.files[p.relative_to(self.vol_root).as_posix()] = p.read_bytes()
        return result


def test_modal_round_trip_uploads_inputs_runs_step_downloads_outputs(concat_step, inputs, data_dir, tmp_path,
                                                                   monkeypatch):
    volume = FakeVolume()
    function = FakeFunction(volume, tmp_path / "vol")
    (data_dir / "out" / "adapter").mkdir(parents=True)
    (data_dir / "out" / "adapter" / "stale.txt").write_text("old run")  # replaced as a whole
    compute = ComputeResource(backend="modal")
    monkeypatch.setattr(ComputeResource, "modal_runner", lambda self: ModalStepRunner(volume, function, data_dir))

    out = compute.run_step(SPEC)

    assert out == ConcatResult(chars=11, root_name="vol")  # the returned dict, re-validated as the result type
    assert volume.uploads == ["/in/one.txt", "/in/two.txt", "/.distillery/uploads.json"]
    assert function.calls == [SPEC.model_dump(mode="json")]
    assert (data_dir / "out" / "joined.txt").read_text() == "hello world"
    adapter = data_dir / "out" / "adapter"
    assert sorted(p.relative_to(adapter).as_posix() for p in adapter.rglob("*") if p.is_file()) == [
        "a.txt", "nested/b.txt"]
    assert not [p for p in (data_dir / "out").iterdir() if p.name.startswith(".tmp-")]


def test_modal_missing_output_on_volume_is_named(concat_step, inputs, data_dir, tmp_path, monkeypatch):
    volume = FakeVolume()
    function = FakeFunction(volume, tmp_path / "vol")
    monkeypatch.setattr(ComputeResource, "modal_runner", lambda self: ModalStepRunner(volume, function, data_dir))
    with pytest.raises(ComputeBackendError, match="'out/never' was not found on the Modal volume"):
        ComputeResource(backend="modal").run_step(SPEC.model_copy(update={"declared": ["out/never"]}))


def test_modal_reupload_sends_only_changed_inputs(concat_step, inputs, data_dir, tmp_path, monkeypatch):
    volume = FakeVolume()
    function = FakeFunction(volume, tmp_path / "vol")
    monkeypatch.setattr(ComputeResource, "modal_runner", lambda self: ModalStepRunner(volume, function, data_dir))
    compute = ComputeResource(backend="modal")
    compute.run_step(SPEC.model_copy(update={"declared": ["out/joined.txt"]}))
    volume.uploads.clear()
    compute.run_step(SPEC.model_copy(update={"declared": ["out/joined.txt"]}))
    assert volume.uploads == []  # nothing changed, nothing sent
    (data_dir / "in" / "two.txt").write_text("there")
    compute.run_step(SPEC.model_copy(update={"declared": ["out/joined.txt"]}))
    assert volume.uploads == ["/in/two.txt", "/.distillery/uploads.json"]
    assert (data_dir / "out" / "joined.txt").read_text() == "hello there"


def test_modal_result_that_does_not_match_the_result_type_is_refused(concat_step, inputs, data_dir, tmp_path,
                                                                   monkeypatch):
    class BadFunction(FakeFunction):
        def remote(self, spec):
            return {"chars": "many", "root_name": "vol"}

    volume = FakeVolume()
    function = BadFunction(volume, tmp_path / "vol")
    monkeypatch.setattr(ComputeResource, "modal_runner", lambda self: ModalStepRunner(volume, function, data_dir))
    with pytest.raises(ComputeBackendError, match="not a valid ConcatResult: chars"):
        ComputeResource(backend="modal").run_step(SPEC.model_copy(update={"declared": []}))


def test_each_spec_registers_its_kind_and_result_type():
    from resources.modal_app import STEPS

    assert {s.model_fields["kind"].default: s.result_type.__name__ for s in STEPS} == {
        "train_lora": "TrainResult", "export_gguf": "ExportResult", "train_filter": "FilterTrainResult",
        "train_thyme": "ThymeTrainResult"}
    assert all(steps_module.STEP_KINDS[s.model_fields["kind"].default] is s for s in STEPS)
    assert steps_module.STEP_KINDS["concat"] is ConcatSpec and ConcatSpec.result_type is ConcatResult
    with pytest.raises(TypeError, match="step kind 'concat' is defined twice"):
        class Again(StepSpec[ConcatResult]):
            kind: Literal["concat"] = "concat"
