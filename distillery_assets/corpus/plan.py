"""Which ``.corpus`` files of a partition exist and which are still missing, read from its ``prompts.txt`` files."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.corpus.layout import PROMPTS_FILE
from distillery_assets.corpus.prompts_file import CorpusTask, parse_prompts_file
from distillery_assets.rejects import Reject


@dataclass
class PartitionPlan:
    """The state of one partition directory: every leaf's prompts, split into done and missing."""

    directory: Path
    prompt_files: list[Path] = field(default_factory=list)
    existing: list[CorpusTask] = field(default_factory=list)
    pending: list[CorpusTask] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about a prompts.txt as a whole (a byte-order mark removed)

    @property
    def total(self) -> int:
        return len(self.existing) + len(self.pending)


def scan_partition(directory: Path) -> PartitionPlan:
    """Walk ``directory`` for ``prompts.txt`` files (sorted, so runs are repeatable) and classify each line.

    A file counts as done when it exists and is not empty: writes are atomic, so an existing ``.corpus`` is
    never partial; an empty one can only be what a power loss left of a file renamed before its bytes
    reached the disk (files are flushed together at the end of a run), and is made again.

    Nothing about one line stops the others: a line whose file cannot even be looked at (a folder of that
    name, a permission refused) is one more reject naming its file and line, like a line that does not parse.
    """
    plan = PartitionPlan(directory=directory)
    if not directory.is_dir():
        return plan
    for prompts in sorted(directory.rglob(PROMPTS_FILE)):
        plan.prompt_files.append(prompts)
        read = parse_prompts_file(prompts)
        plan.rejects.extend(read.rejects)
        plan.warnings.extend(read.warnings)
        for task in read.tasks:
            done = _done(task)
            if isinstance(done, Reject):
                plan.rejects.append(done)
            else:
                (plan.existing if done else plan.pending).append(task)
    return plan


def _done(task: CorpusTask) -> bool | Reject:
    try:
        st = task.path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        return Reject(task.source, f"cannot look at {task.file!r} ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return Reject(task.source, f"{task.file!r} exists and is not a regular file (a folder?)")
    return st.st_size > 0
