"""A compute step, whatever the pipeline: a typed spec that runs the same way in process and on Modal.

A step is a pydantic spec generic in its result, ``class TrainLoraSpec(StepSpec[TrainResult])``, with a
``kind`` field; ``spec.run(root) -> TrainResult`` does the work and ``spec.result_type`` is that result's
class (read from the generic argument). Every path in a spec is a :data:`RelPath`, relative to ``root``
(``data_dir()`` locally, ``/vol`` on Modal) and refused at construction if it is absolute or climbs out with
``..``. A spec also names the files it reads (``inputs()``) and writes (``outputs()``), so the compute
resource knows what to upload and download.

Each spec class registers itself by ``kind`` when it is defined (:data:`STEP_KINDS`). Parsing a dumped spec
back into its class is the composition's job: ``resources/modal_app.py`` imports every spec, and its
``parse_spec`` looks the kind up here. This module knows no pipeline; the specs live beside their work
(``training.steps``, ``filters.train``, ``thyme.steps``).

Each step skips work that is already done: :func:`step_fingerprint` (settings + input file hashes) is
compared with the one recorded beside a finished output by :func:`finished`; on a match the recorded
result comes back with ``reused=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from distillery_assets.io.hashing import json_fingerprint, sha256_file_cached
from distillery_assets.paths import safe_child


class StepResult(BaseModel):
    """Base of every step's result. ``reused``: a finished output with the same fingerprint was kept."""

    model_config = ConfigDict(extra="forbid")
    reused: bool = False

    def record_json(self) -> str:
        """The JSON written beside the step's output (``reused`` is a property of a call, not of the run)."""
        return self.model_dump_json(indent=2, exclude={"reused"})


R = TypeVar("R", bound=StepResult)


# --------------------------------------------------------------------------------- fingerprint and reuse

def step_fingerprint(settings: Any, files: Sequence[Path] = ()) -> str:
    """The one fingerprint of a step: its JSON-able settings plus the sha256 of each input file."""
    return json_fingerprint({"settings": settings, "files": [sha256_file_cached(f) for f in files]})


def read_result(record: Path, model: type[R]) -> R | None:
    """The result recorded in ``record``, or None if it is missing or no longer matches ``model``."""
    try:
        return model.model_validate_json(Path(record).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValidationError):
        return None


def finished(record: Path, model: type[R], fingerprint: str, artefact: Path) -> R | None:
    """The recorded result of a finished run with this ``fingerprint`` whose ``artefact`` exists, marked reused."""
    done = read_result(record, model)
    if done is None or getattr(done, "fingerprint", None) != fingerprint or not Path(artefact).exists():
        return None
    return done.model_copy(update={"reused": True})


# ------------------------------------------------------------------------------------------------- specs

def _relative(value: str, info: ValidationInfo) -> str:
    safe_child(Path("/step-root"), value, source=f"step spec field {info.field_name!r}")
    return PurePosixPath(value).as_posix()


RelPath = Annotated[str, AfterValidator(_relative)]
"""A path relative to the step's root (no absolute paths, no ``..``)."""


class StepSpec(BaseModel, Generic[R]):
    """Base of every step spec: subclass ``StepSpec[YourResult]``, set ``kind`` (a ``Literal`` with that
    default) and implement ``run`` (and ``inputs`` / ``outputs`` when the step reads or writes files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    result_type: ClassVar[type[StepResult]] = StepResult
    """The class ``run`` returns, from the generic argument (``StepSpec[TrainResult]`` -> ``TrainResult``)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for klass in cls.__mro__:  # the nearest StepSpec[X] above: X is what run returns
            meta = getattr(klass, "__pydantic_generic_metadata__", None) or {}
            if meta.get("origin") is StepSpec and meta.get("args"):
                if isinstance(meta["args"][0], type):
                    cls.result_type = meta["args"][0]
                break
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str) and "kind" in vars(cls).get("__annotations__", {}):  # a class that names its kind
            _register(kind, cls)

    def inputs(self) -> list[str]:
        """Paths (relative to the root) the step reads; uploaded first on Modal."""
        return []

    def outputs(self) -> list[str]:
        """Paths (relative to the root) the step must leave behind; downloaded after it on Modal."""
        return []

    def run(self, root: Path) -> R:
        raise NotImplementedError

    def path(self, field: str, root: Path) -> Path:
        """The absolute path of a spec field under ``root`` (checked again against the real root)."""
        return safe_child(Path(root), getattr(self, field), source=f"step spec field {field!r}")


# ------------------------------------------------------------------------------------------ registry

STEP_KINDS: dict[str, type[StepSpec[Any]]] = {}
"""Every step spec defined so far, by its ``kind``: what a dict from the wire is parsed into."""


def _register(kind: str, cls: type[StepSpec[Any]]) -> None:
    known = STEP_KINDS.get(kind)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"step kind {kind!r} is defined twice: {known.__module__}.{known.__qualname__} "
                        f"and {cls.__module__}.{cls.__qualname__}")
    STEP_KINDS[kind] = cls  # the same class defined again (a module reloaded) replaces itself

