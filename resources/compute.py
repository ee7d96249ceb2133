"""``ComputeResource``: where a GPU step runs. One typed step (a ``distillery_assets.steps.StepSpec[R]``: a LoRA's
training or export, a filter's scorer, a thyme model; ``compute.run_step(spec) -> R``, the spec's own result
type), two places:

* ``local``  calls ``spec.run(data_dir())`` in this process (CPU here, CUDA when present).
* ``modal``  uploads ``spec.inputs()`` (paths relative to data_dir) to a Modal Volume, calls the deployed
  function ``run_step`` of the app in ``resources/modal_app.py`` with ``spec.model_dump()`` (it runs the
  spec against ``/vol`` on a GPU, commits the volume and returns ``result.model_dump()``), re-validates that
  dict as ``spec.result_type``, then downloads ``spec.outputs()`` back under data_dir(), atomically.

Chosen by ``DISTILLERY_COMPUTE_BACKEND`` (default ``local``); never by falling back after an error.
Modal credentials come from MODAL_TOKEN_ID / MODAL_TOKEN_SECRET or ``~/.modal.toml`` and are only
checked for presence here; their values are never logged or stored.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import dagster as dg
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from distillery_assets.catalog import fingerprint
from distillery_assets.io import atomic_path
from distillery_assets.io.yamlfile import field_problems
from distillery_assets.paths import data_dir, safe_child
from distillery_assets.steps import StepResult, StepSpec

log = logging.getLogger(__name__)
R = TypeVar("R", bound=StepResult)

DEFAULT_APP = "distillery-gpu"
SCORE_APP = "distillery-score"  # resources/modal_scoring.py: filter scoring fanned out over shards
DEFAULT_VOLUME = "distillery-data"
DEFAULT_GPU = "A10G"
DEFAULT_TIMEOUT_S = 4 * 3600
UPLOAD_MANIFEST = ".distillery/uploads.json"  # on the volume: input path -> sha256 of what was uploaded


class ComputeBackendError(RuntimeError):
    """A step could not be run on the chosen backend; the message says what to fix."""


def _rel_paths(paths: Sequence[str | Path], what: str) -> list[str]:
    rels = []
    for index, rel in enumerate(paths):
        safe_child(data_dir(), str(rel), source=f"run_step {what}[{index}]")  # refuses ../, absolute paths
        rels.append(PurePosixPath(str(rel)).as_posix())
    return rels


def _dump(spec: StepSpec[Any]) -> dict[str, Any]:
    try:
        return spec.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise ValueError(f"run_step {spec.kind!r}: the spec must be JSON-serialisable ({exc})") from exc


def modal_credentials_present() -> bool:
    """True when Modal has a token id and secret (env or ~/.modal.toml). Values are not returned."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    try:
        from modal.config import config
        return bool(config.get("token_id") and config.get("token_secret"))
    except Exception:  # an unreadable ~/.modal.toml is the same as none for this check
        return False


class ModalStepRunner:
    """Moves files between data_dir and a Modal Volume and calls the deployed step function.

    ``volume`` and ``function`` are a ``modal.Volume`` and a ``modal.Function`` (or objects with the
    same methods: ``batch_upload``, ``listdir``, ``read_file``; ``remote``)."""

    def __init__(self, volume: Any, function: Any, root: Path):
        self.volume, self.function, self.root = volume, function, Path(root)

    def upload(self, rels: Sequence[str]) -> list[str]:
        """Upload inputs not already on the volume with the same content (by sha256, tracked in
        ``UPLOAD_MANIFEST`` on the volume). Returns the paths actually sent."""
        if not rels:
            return []
        manifest = self._read_manifest()
        wanted: dict[str, tuple[Path, str]] = {}
        for rel in rels:
            local = safe_child(self.root, rel, source="run_step inputs")
            if not local.exists():
                raise FileNotFoundError(f"run_step input {rel!r} does not exist under {self.root}")
            sha = fingerprint(local).sha256
            if manifest.get(rel) != sha:
                wanted[rel] = (local, sha)
        if not wanted:
            return []
        with self.volume.batch_upload(force=True) as batch:
            for rel, (local, sha) in wanted.items():
                if local.is_dir():
                    batch.put_directory(str(local), f"/{rel}")
                else:
                    batch.put_file(str(local), f"/{rel}")
                manifest[rel] = sha
            batch.put_file(io.BytesIO(json.dumps(manifest, indent=1, sort_keys=True).encode()),
                           f"/{UPLOAD_MANIFEST}")
        return list(wanted)

    def _read_manifest(self) -> dict[str, str]:
        try:
            data = b"".join(self.volume.read_file(f"/{UPLOAD_MANIFEST}"))
        except FileNotFoundError:
            return {}
        try:
            manifest = json.loads(data)
        except ValueError:
            log.warning("ignoring unreadable upload manifest %s on the Modal volume", UPLOAD_MANIFEST)
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def call(self, spec: dict[str, Any]) -> Any:
        return self.function.remote(spec)

    def download(self, rels: Sequence[str]) -> list[Path]:
        from modal.volume import FileEntryType

        written = []
        for rel in rels:
            entries = [e for e in self.volume.listdir(f"/{rel}", recursive=True) if e.type == FileEntryType.FILE]
            if not entries:
                raise ComputeBackendError(f"run_step output {rel!r} was not found on the Modal volume")
            target = safe_child(self.root, rel, source="run_step outputs")
            names = [PurePosixPath(e.path.strip("/")) for e in entries]
            if len(entries) == 1 and names[0].as_posix() == rel.strip("/"):
                with atomic_path(target) as tmp:
                    self._fetch(entries[0].path, tmp)
            else:
                with atomic_path(target, is_dir=True) as tmp:
                    for entry, name in zip(entries, names, strict=True):
                        dest = safe_child(tmp, name.relative_to(rel.strip("/")).as_posix(),
                                          source=f"Modal volume listing of {rel}")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        self._fetch(entry.path, dest)
            written.append(target)
        return written

    def _fetch(self, remote: str, dest: Path) -> None:
        with open(dest, "wb") as fh:
            for chunk in self.volume.read_file(remote):
                fh.write(chunk)


class ComputeResource(dg.ConfigurableResource):
    """Where GPU steps run. Env vars: DISTILLERY_COMPUTE_BACKEND (local|modal), DISTILLERY_MODAL_GPU,
    DISTILLERY_MODAL_APP, DISTILLERY_MODAL_VOLUME, DISTILLERY_COMPUTE_TIMEOUT_S, MODAL_ENVIRONMENT."""

    backend: Literal["local", "modal"] = "local"
    gpu: str = DEFAULT_GPU
    timeout_s: int = DEFAULT_TIMEOUT_S
    modal_app: str = DEFAULT_APP
    modal_function: str = "run_step"
    volume: str = DEFAULT_VOLUME
    modal_environment: str | None = None

    @classmethod
    def from_env(cls) -> ComputeResource:
        backend = os.environ.get("DISTILLERY_COMPUTE_BACKEND", "local").strip().lower() or "local"
        if backend not in ("local", "modal"):
            raise ValueError(f"DISTILLERY_COMPUTE_BACKEND must be 'local' or 'modal', not {backend!r}")
        return cls(
            backend=backend,
            gpu=os.environ.get("DISTILLERY_MODAL_GPU", DEFAULT_GPU),
            timeout_s=int(os.environ.get("DISTILLERY_COMPUTE_TIMEOUT_S", DEFAULT_TIMEOUT_S)),
            modal_app=os.environ.get("DISTILLERY_MODAL_APP", DEFAULT_APP),
            volume=os.environ.get("DISTILLERY_MODAL_VOLUME", DEFAULT_VOLUME),
            modal_environment=os.environ.get("MODAL_ENVIRONMENT") or None,
        )

    def ran_on(self, device: str) -> str:
        """``local CPU``, ``modal GPU``...: where a step ran, for metadata and the catalogue."""
        return f"{self.backend} {'GPU' if device == 'cuda' else 'CPU'}"

    def run_step(self, spec: StepSpec[R]) -> R:
        """Run ``spec`` on the configured backend and return its typed result. The spec's ``inputs()``
        must exist under data_dir() before, its ``outputs()`` after."""
        dumped = _dump(spec)
        ins, outs = _rel_paths(spec.inputs(), "inputs"), _rel_paths(spec.outputs(), "outputs")
        root = data_dir()
        missing = [rel for rel in ins if not (root / rel).exists()]
        if missing:
            raise FileNotFoundError(f"run_step {spec.kind!r}: inputs missing under {root}: {', '.join(missing)}")
        log.info("run_step %s on %s (inputs=%s outputs=%s)", spec.kind, self.backend, ins, outs)
        if self.backend == "local":
            result = spec.run(root)
        else:
            result = _validate_result(spec, self._run_modal(dumped, ins, outs))
        if not isinstance(result, spec.result_type):
            raise ComputeBackendError(f"run_step {spec.kind!r} returned {type(result).__name__}, "
                                      f"expected {spec.result_type.__name__}")
        absent = [rel for rel in outs if not (root / rel).exists()]
        if absent:
            raise ComputeBackendError(f"run_step {spec.kind!r} finished but did not produce: {', '.join(absent)}")
        return result

    def shard_runner(self, model_rel: str, *, parallelism: int = 8, **options: Any):
        """A runner for ``distillery_assets.filters.score.score_dataset``: ``local`` scores each shard in this
        process; ``modal`` uploads the model folder (``model_rel``, under data_dir) to the volume and fans
        waves of ``parallelism`` shards out with ``.map`` over ``score_shard`` of ``resources/modal_scoring.py``."""
        from distillery_assets.filters.score import in_process_runner, modal_map_runner

        rel = _rel_paths([model_rel], "model")[0]
        if self.backend == "local":
            return in_process_runner(data_dir() / rel, **options)
        runner = self.modal_runner()
        runner.upload([rel])
        import modal

        function = modal.Function.from_name(SCORE_APP, "score_shard", environment_name=self.modal_environment)
        function = function.with_options(gpu=self.gpu, timeout=self.timeout_s)
        return _deploy_hint(modal_map_runner(function, rel, parallelism=parallelism, **options), SCORE_APP,
                            "resources/modal_scoring.py")

    def modal_runner(self) -> ModalStepRunner:
        """Handles on the Modal Volume and deployed function (lazy: no network until used)."""
        if not modal_credentials_present():
            raise ComputeBackendError(
                "DISTILLERY_COMPUTE_BACKEND=modal but no Modal credentials were found: set MODAL_TOKEN_ID "
                "and MODAL_TOKEN_SECRET (or run `modal token new`), or use DISTILLERY_COMPUTE_BACKEND=local")
        import modal

        volume = modal.Volume.from_name(self.volume, create_if_missing=True,
                                        environment_name=self.modal_environment)
        function = modal.Function.from_name(self.modal_app, self.modal_function,
                                            environment_name=self.modal_environment)
        function = function.with_options(gpu=self.gpu, timeout=self.timeout_s)
        return ModalStepRunner(volume, function, data_dir())

    def _run_modal(self, spec: dict[str, Any], ins: list[str], outs: list[str]) -> Any:
        runner = self.modal_runner()
        import modal.exception

        try:
            sent = runner.upload(ins)
            log.info("Modal volume %s: uploaded %d of %d inputs (the rest were unchanged)",
                     self.volume, len(sent), len(ins))
            result = runner.call(spec)
            runner.download(outs)
        except modal.exception.NotFoundError as exc:
            raise ComputeBackendError(
                f"Modal: {exc}. Deploy the app first: `modal deploy resources/modal_app.py` "
                f"(app {self.modal_app!r}, volume {self.volume!r})") from exc
        except modal.exception.AuthError as exc:
            raise ComputeBackendError("Modal rejected the credentials (MODAL_TOKEN_ID / MODAL_TOKEN_SECRET); "
                                      "run `modal token new`") from exc
        return result


def _deploy_hint(run: Any, app: str, module: str) -> Any:
    """``run`` (a shard runner calling a deployed function lazily), with Modal's NotFoundError for an app that
    was never deployed turned into a ComputeBackendError that says how to deploy it."""
    import modal.exception

    def hinted(wave: list) -> Any:  # a generator, as the runner's results: each shard is kept as it arrives
        try:
            yield from run(wave)
        except modal.exception.NotFoundError as exc:
            raise ComputeBackendError(f"Modal: {exc}. Deploy the app first: `modal deploy {module}` "
                                      f"(app {app!r})") from exc

    hinted.parallelism = getattr(run, "parallelism", 1)  # type: ignore[attr-defined]
    return hinted


def _validate_result(spec: StepSpec[R], data: Any) -> R:
    """The Modal function's returned dict, validated as the spec's result type."""
    if not isinstance(data, dict):
        raise ComputeBackendError(f"run_step {spec.kind!r} returned {type(data).__name__}, expected a dict")
    try:
        return spec.result_type.model_validate(data)
    except ValidationError as exc:
        raise ComputeBackendError(f"run_step {spec.kind!r}: the Modal result is not a valid "
                                  f"{spec.result_type.__name__}: {field_problems(exc)}") from exc
