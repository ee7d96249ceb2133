"""The deployable Modal apps import offline and are built from the intended spec: every layer of the image is
rendered here, with no connection, the way Modal's builder receives it (its Dockerfile commands and the files
copied in), and compared with requirements.lock and scripts/setup.sh. Modal's own deprecation warnings are
errors here, so nothing relies on an API a later modal removes (App.registered_functions: modal 1.7)."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shlex
from pathlib import Path

import modal
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

pytestmark = pytest.mark.filterwarnings("error::modal.exception.DeprecationError")

ROOT = Path(__file__).resolve().parents[2]
BUILDER_VERSION = "2025.06"


@pytest.fixture
def modal_app(monkeypatch):
    for var in ("DISTILLERY_MODAL_GPU", "DISTILLERY_MODAL_TIMEOUT_S", "DISTILLERY_MODAL_VOLUME",
                "DISTILLERY_MODAL_HF_SECRET"):
        monkeypatch.delenv(var, raising=False)
    import resources.modal_app as module
    yield importlib.reload(module)
    monkeypatch.undo()
    importlib.reload(module)


def _functions(module) -> dict[str, modal.Function]:
    """The module's Modal functions by name, each checked to belong to the module's app."""
    found = {name: f for name, f in vars(module).items() if isinstance(f, modal.Function)}
    assert all(f.app.name == module.app.name for f in found.values())
    return found


def _layers(image: modal.Image) -> list[dict]:
    """Every layer of ``image``, base first: its Dockerfile commands and the local files it copies in."""
    from modal._utils.async_utils import synchronizer

    def cells(fn):
        return dict(zip(fn.__code__.co_freevars, [c.cell_contents for c in fn.__closure__ or ()]))

    layers, todo = [], [synchronizer._translate_in(image)]
    while todo:
        scope = cells(todo.pop()._load)
        if scope.get("dockerfile_function") is not None:
            spec = scope["dockerfile_function"](BUILDER_VERSION)
            mount_fn = scope.get("context_mount_function")
            copied = [(Path(e.local_file), str(e.remote_path)) for e in mount_fn(BUILDER_VERSION)._entries] \
                if mount_fn else []
            layers.append({"commands": spec.commands, "context_files": spec.context_files, "copied": copied})
        todo += [scope["base_image"]] if "base_image" in scope else []
        todo += list((scope.get("base_images") or {}).values())
    return layers[::-1]


def _pip_installs(layers: list[dict]) -> list[list[str]]:
    runs = [c.removeprefix("RUN ") for layer in layers for c in layer["commands"] if c.startswith("RUN ")]
    return [shlex.split(r) for r in runs if re.match(r"(python -m )?pip install", r) and "--upgrade pip" not in r]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    return {normalize(p.split("==")[0]): p.split("==")[1] for p in pins}


def _closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need, transitively, with markers evaluated for this Python on Linux
    (the image's platform), extras not taken."""
    env = {**default_environment(), "extra": ""}
    seen: set[str] = set()
    todo = [normalize(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in importlib.metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(normalize(req.name))
    return seen


def test_app_function_gpu_volume_and_secret(modal_app):
    assert modal_app.app.name == "distillery-gpu"
    assert list(_functions(modal_app)) == ["run_step"]
    spec = modal_app.run_step._spec_
    assert spec.gpus == "A10G"
    assert list(spec.volumes) == ["/vol"] and "distillery-data" in repr(spec.volumes["/vol"])
    assert len(spec.secrets) == 1 and "huggingface-secret" in repr(spec.secrets[0])
    assert modal_app.TIMEOUT_S == 4 * 3600 and modal_app.VOLUME_NAME == "distillery-data"


def test_the_app_layout_is_read_without_what_modal_1_7_removes(modal_app, monkeypatch):
    for name in ("registered_functions", "registered_classes"):  # deprecated in 1.6, removed in modal 1.7
        monkeypatch.delattr(modal.App, name)
    assert list(_functions(modal_app)) == ["run_step"]


def test_scoring_app_has_one_function_on_the_same_image(modal_app):
    import resources.modal_scoring as scoring

    scoring = importlib.reload(scoring)
    assert scoring.app.name == "distillery-score" and list(_functions(scoring)) == ["score_shard"]
    assert _layers(scoring.image)[: len(_layers(modal_app.image))] == _layers(modal_app.image)


def test_deploy_settings_come_from_env(modal_app, monkeypatch):
    monkeypatch.setenv("DISTILLERY_MODAL_GPU", "H100")
    monkeypatch.setenv("DISTILLERY_MODAL_HF_SECRET", "")
    monkeypatch.setenv("DISTILLERY_MODAL_VOLUME", "other-vol")
    module = importlib.reload(modal_app)
    spec = module.run_step._spec_
    assert spec.gpus == "H100" and spec.secrets == [] and "other-vol" in repr(spec.volumes["/vol"])


def test_every_package_installed_in_the_image_is_the_locked_version(modal_app):
    lock = _lock()
    layers = _layers(modal_app.image)
    # the lock itself is copied in, from the repo, before anything is installed
    copies = [c for layer in layers for c in layer["copied"]]
    assert [local for local, _ in copies] == [ROOT / "requirements.lock"], copies
    lock_in_image = copies[0][1]
    installs = _pip_installs(layers)
    assert installs and layers.index(next(x for x in layers if x["copied"])) < min(
        i for i, x in enumerate(layers) for c in x["commands"] if "pip install" in c and "--upgrade pip" not in c)
    named = []
    for argv in installs:
        # each install is held to the lock (constraints), transitive dependencies included
        assert "--constraint" in argv and argv[argv.index("--constraint") + 1] == lock_in_image, argv
        named += [a for a in argv[argv.index("install") + 1:] if not a.startswith("-") and a != lock_in_image]
    assert all("==" in a for a in named), named
    pins = dict(a.split("==") for a in named)
    for name, version in pins.items():  # the versions named on the command lines are the lock's
        assert lock[normalize(name)] == version, (name, version)
    # everything those packages pull in is in the lock (so the constraint fixes its version) and is the version
    # installed here, where the tests ran
    needed = _closure(list(pins))
    assert {"torch", "transformers", "numpy", "huggingface-hub", "tokenizers", "safetensors"} <= needed
    unpinned = sorted(needed - set(lock))
    assert unpinned == [], f"installed in the image but not pinned by requirements.lock: {unpinned}"
    for name in sorted(needed):
        local = importlib.metadata.version(name).split("+")[0]
        assert lock[name] == local, (name, lock[name], local)


def test_llama_cpp_is_built_portable_like_setup_sh(modal_app):
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    default = re.search(r'CMAKE_ARGS="\$\{CMAKE_ARGS:-([^}]*)\}"', setup).group(1)
    layers = _layers(modal_app.image)
    env = [c for layer in layers for c in layer["commands"] if c.startswith("ENV CMAKE_ARGS=")]
    assert [shlex.split(c.removeprefix("ENV "))[0] for c in env] == [f"CMAKE_ARGS={default}"]
    assert "-DGGML_NATIVE=OFF" in default.split()
    llama_layer = next(i for i, x in enumerate(layers) if any("llama-cpp-python==" in c for c in x["commands"]))
    assert any(c.startswith("ENV CMAKE_ARGS=") for x in layers[:llama_layer] for c in x["commands"])
    assert modal_app.PYTHON_VERSION == "3.11" and modal_app.LOCAL_SOURCES == ("distillery_assets",)


def test_the_scoring_path_says_to_deploy_the_app_first(monkeypatch, tmp_path):
    import modal.exception

    import resources.compute as compute
    from resources.compute import ComputeBackendError, ComputeResource

    class Missing:
        def with_options(self, **kw):
            return self

        def map(self, *args, **kw):
            raise modal.exception.NotFoundError("App 'distillery-score' not found in environment 'main'")
            yield  # a generator, as Function.map is

    class Runner:
        def upload(self, rels):
            return []

    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    (tmp_path / "filters" / "m").mkdir(parents=True)
    monkeypatch.setattr(ComputeResource, "modal_runner", lambda self: Runner())
    monkeypatch.setattr(modal.Function, "from_name", staticmethod(lambda *a, **kw: Missing()))
    run = ComputeResource(backend="modal").shard_runner("filters/m")
    with pytest.raises(ComputeBackendError, match=r"Deploy the app first: `modal deploy resources/modal_scoring.py`"):
        list(run([[{"id": "a", "text": "t"}]]))
    assert compute.SCORE_APP == "distillery-score"
