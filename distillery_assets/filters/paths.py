"""Where a filter version's definition is read from and where its outputs go; version discovery and the
partition keys built from it.

Definitions vs outputs (the same split as ``data/config`` vs ``data_dir()`` for the other pipelines):

* definitions: ``filters_root()`` (in :mod:`distillery_assets.paths`, beside the other roots) =
  ``$DISTILLERY_FILTERS_DIR`` or ``<repo>/data/filters`` (shipped, committed);
* outputs: ``outputs_root()`` = ``data_dir()/filters`` (materialized, gitignored).

With the default data folder the two are the same folder, so the tree is exactly the seed's::

    data/filters/<name>/v<N>/{config.yaml, prefilter.yaml, prompt.md, README.md}     definition
    data/filters/<name>/v<N>/{model/, training_history.json, training_metadata.json}   outputs beside it
    data/filters/reports/<name>_v<N>_training_report.docx, <name>_v<N>_plots/
    data/filters/datasets/<name>_ground_truth_v<N>_splits/{train,val,test}.jsonl, split_metadata.json
    data/filters/datasets/<name>_ground_truth_v<N>/   candidates, prefilter decisions, labels, oracle journal

With ``$DISTILLERY_DATA_DIR`` elsewhere (a test, an empty data folder), the definitions are still read from
the checkout and the outputs mirror the same tree under ``$DISTILLERY_DATA_DIR/filters``.

Partition keys are ``<name>.v<N>`` (``educational_value.v1``): no '/', ',', '|', brackets or '...', so
they pass Dagster's key rules, the CLI's ``--partition`` and file names unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distillery_assets.filters.config import CONFIG_FILE, NAME_RE
from distillery_assets.paths import FILTERS_DIR_ENV, data_dir, filters_root

__all__ = ["FILTERS_DIR_ENV", "FilterPaths", "FilterVersion", "filter_versions", "filters_root", "find_version",
           "outputs_root", "parse_partition_key", "partition_key"]
_KEY_RE = re.compile(r"^([a-z0-9][a-z0-9_-]*)\.v(\d+)$")
_VERSION_DIR_RE = re.compile(r"^v(\d+)$")


def outputs_root() -> Path:
    """Where filter outputs go: ``data_dir()/filters`` (not created here)."""
    return data_dir() / "filters"


def partition_key(name: str, version: int) -> str:
    if not NAME_RE.match(name) or "." in name:
        raise ValueError(f"{name!r} is not a filter name")
    return f"{name}.v{int(version)}"


def parse_partition_key(key: str) -> tuple[str, int]:
    """``"educational_value.v1"`` -> ``("educational_value", 1)``; a clear ValueError otherwise."""
    m = _KEY_RE.match(key or "")
    if not m:
        raise ValueError(f"{key!r} is not a filter partition key (expected '<name>.v<N>', e.g. 'educational_value.v1')")
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class FilterVersion:
    name: str
    version: int
    folder: Path  # the definition folder

    @property
    def key(self) -> str:
        return partition_key(self.name, self.version)


def filter_versions(root: Path | None = None) -> list[FilterVersion]:
    """Every ``<root>/<name>/v<N>/`` holding a ``config.yaml``, sorted by name then version number.

    Only names are looked at (nothing is parsed), so a broken config never hides the other versions: it
    fails when its own partition loads it. The ``reports`` and ``datasets`` output folders never hold
    ``v<N>/config.yaml`` and are skipped by the same rule."""
    root = Path(root) if root is not None else filters_root()
    found: list[FilterVersion] = []
    if not root.is_dir():
        return found
    for name_dir in root.iterdir():
        if not name_dir.is_dir() or not NAME_RE.match(name_dir.name) or name_dir.name in ("reports", "datasets"):
            continue
        for version_dir in name_dir.iterdir():
            m = _VERSION_DIR_RE.match(version_dir.name)
            if m and version_dir.is_dir() and (version_dir / CONFIG_FILE).is_file():
                found.append(FilterVersion(name_dir.name, int(m.group(1)), version_dir.resolve()))
    return sorted(found, key=lambda v: (v.name, v.version))


def find_version(key: str, root: Path | None = None) -> FilterVersion:
    """The version a partition key names (a KeyError listing the known keys if there is none)."""
    name, version = parse_partition_key(key)
    for v in filter_versions(root):
        if v.name == name and v.version == version:
            return v
    known = [v.key for v in filter_versions(root)]
    raise KeyError(f"no filter version {key!r} under {root or filters_root()}; known: {known}")


@dataclass(frozen=True)
class FilterPaths:
    """Every path of one filter version. ``definition`` is where config/prefilter/prompt are read; all other
    paths are outputs under ``output_root`` (default ``outputs_root()``). Nothing is created here."""

    name: str
    version: int
    definition: Path
    output_root: Path

    @classmethod
    def of(cls, name: str, version: int, *, definitions: Path | None = None,
           outputs: Path | None = None) -> FilterPaths:
        definitions = Path(definitions) if definitions is not None else filters_root()
        return cls(name, int(version), (definitions / name / f"v{int(version)}").resolve(),
                   Path(outputs) if outputs is not None else outputs_root())

    @classmethod
    def for_key(cls, key: str, **kw) -> FilterPaths:
        name, version = parse_partition_key(key)
        return cls.of(name, version, **kw)

    @property
    def key(self) -> str:
        return partition_key(self.name, self.version)

    @property
    def stem(self) -> str:  # "<name>_v<N>", as the seed names reports
        return f"{self.name}_v{self.version}"

    # definition files
    @property
    def config_file(self) -> Path:
        return self.definition / CONFIG_FILE

    # version folder outputs (beside the definition when the data folder is the checkout's)
    @property
    def version_dir(self) -> Path:
        return self.output_root / self.name / f"v{self.version}"

    @property
    def model_dir(self) -> Path:
        return self.version_dir / "model"

    @property
    def training_history(self) -> Path:
        return self.version_dir / "training_history.json"

    @property
    def training_metadata(self) -> Path:
        return self.version_dir / "training_metadata.json"

    @property
    def test_results(self) -> Path:
        """The test table judged with the filter's own rules, written by filter_model; read by report and upload."""
        return self.version_dir / "test_results.json"

    # reports
    @property
    def reports_dir(self) -> Path:
        return self.output_root / "reports"

    @property
    def report_docx(self) -> Path:
        return self.reports_dir / f"{self.stem}_training_report.docx"

    @property
    def plots_dir(self) -> Path:
        return self.reports_dir / f"{self.stem}_plots"

    # datasets
    @property
    def datasets_dir(self) -> Path:
        return self.output_root / "datasets"

    @property
    def ground_truth_dir(self) -> Path:
        """Candidates, prefilter decisions, labels and the oracle journal of this version."""
        return self.datasets_dir / f"{self.name}_ground_truth_v{self.version}"

    @property
    def candidates(self) -> Path:
        return self.ground_truth_dir / "candidates.jsonl"

    @property
    def candidate_rejects(self) -> Path:
        return self.ground_truth_dir / "candidate_rejects.jsonl"

    @property
    def prefiltered(self) -> Path:
        return self.ground_truth_dir / "prefiltered.jsonl"

    @property
    def labels(self) -> Path:
        return self.ground_truth_dir / "labeled_articles.jsonl"

    @property
    def oracle_rejects(self) -> Path:
        return self.ground_truth_dir / "oracle_rejects.jsonl"

    @property
    def oracle_journal(self) -> Path:
        return self.ground_truth_dir / "oracle_journal.jsonl"

    @property
    def oracle_usage(self) -> Path:
        """The oracle's usage summed over every materialization (what the labels really cost)."""
        return self.ground_truth_dir / "oracle_usage.json"

    @property
    def agreement(self) -> Path:
        return self.ground_truth_dir / "oracle_agreement.json"

    @property
    def agreement_journal(self) -> Path:
        """The second oracle's journal (the first oracle's answers are the labels)."""
        return self.ground_truth_dir / "agreement_b.jsonl"

    @property
    def splits_dir(self) -> Path:
        return self.datasets_dir / f"{self.name}_ground_truth_v{self.version}_splits"

    @property
    def split_metadata(self) -> Path:
        return self.splits_dir / "split_metadata.json"

    def split_file(self, split: str) -> Path:
        if split not in ("train", "val", "test"):
            raise ValueError(f"no split {split!r}")
        return self.splits_dir / f"{split}.jsonl"

    # batch scoring
    @property
    def scores_dir(self) -> Path:
        return self.output_root / "scores" / self.stem

    @property
    def upload_dir(self) -> Path:
        """The staged Hub upload (model, history, metadata, test results, definition, card)."""
        return self.output_root / "upload" / self.stem
