"""Make ``source .venv/bin/activate`` point the dagster CLI at this project.

After activation ``DAGSTER_HOME`` is the repo root (where dagster.yaml is, so runs are kept under
data/dagster/ and listed by ``dagster dev``) and ``DAGSTER_MODULE_NAME`` is the code location, so
``dagster asset materialize --select poet_gguf`` and ``dagster dev`` work as typed from the repo root.
A shell function ``dagster`` runs ``dagster dev`` without ``DAGSTER_MODULE_NAME`` (see ``DEV_FUNCTION``).
``deactivate`` puts back whatever the two variables were before and removes the function.

    .venv/bin/python scripts/venv_activation.py [path/to/bin/activate]

Run by scripts/setup.sh. Idempotent: the block between the markers is replaced, never appended twice.
Only the bash/zsh ``activate`` script is changed (not activate.fish / activate.csh).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

BEGIN = "# >>> distillery dagster >>>"
END = "# <<< distillery dagster <<<"
HOOK = "    if command -v _distillery_deactivate >/dev/null 2>&1; then _distillery_deactivate; fi  # distillery dagster"
MODULE = "distillery_assets.definitions"
VARIABLES = ("DAGSTER_HOME", "DAGSTER_MODULE_NAME")
# `dagster dev` (1.13) hands its webserver and daemon a --workspace file; with DAGSTER_MODULE_NAME also in their
# environment they stop on "Invalid set of CLI arguments" and dev hangs without a word. So `dagster dev` runs
# without the variable and finds the code location itself ([tool.dagster] in pyproject.toml, in the repo root).
DEV_FUNCTION = ('dagster () {\n'
                '    if [ "${1:-}" = dev ]; then (unset DAGSTER_MODULE_NAME; command dagster "$@"); '
                'else command dagster "$@"; fi\n'
                '}\n')


def block(repo: Path) -> str:
    values = {"DAGSTER_HOME": shlex.quote(str(repo)), "DAGSTER_MODULE_NAME": MODULE}
    restore = "\n".join(
        f'    if [ -n "${{_DISTILLERY_OLD_{v}+set}}" ]; then export {v}="$_DISTILLERY_OLD_{v}"; else unset {v}; fi'
        for v in VARIABLES)
    save = "\n".join(f'if [ -n "${{{v}+set}}" ]; then _DISTILLERY_OLD_{v}="${v}"; fi' for v in VARIABLES)
    exports = "\n".join(f"export {v}={values[v]}" for v in VARIABLES)
    return (f"{BEGIN} (written by scripts/venv_activation.py; `deactivate` restores the old values)\n"
            f"_distillery_deactivate () {{\n{restore}\n"
            f"    unset {' '.join(f'_DISTILLERY_OLD_{v}' for v in VARIABLES)}\n"
            f"    unset -f _distillery_deactivate dagster\n}}\n{save}\n{exports}\n{DEV_FUNCTION}{END}\n")


def patch(text: str, repo: Path) -> str:
    """``text`` (an activate script) with the block at its end and the restore hook first in deactivate()."""
    text = re.sub(rf"^{re.escape(BEGIN)}.*?^{re.escape(END)}\n?", "", text, flags=re.S | re.M)
    text = "".join(line for line in text.splitlines(keepends=True) if line.rstrip("\n") != HOOK)
    text, hooked = re.subn(r"^deactivate \(\) \{\n", lambda m: m.group(0) + HOOK + "\n", text, count=1, flags=re.M)
    if not hooked:
        print("[setup] note: no deactivate() in the activate script; deactivate will not restore DAGSTER_HOME",
              file=sys.stderr)
    return text.rstrip("\n") + "\n\n" + block(repo)


def main(argv: list[str]) -> int:
    repo = Path(__file__).resolve().parent.parent
    activate = Path(argv[0]) if argv else repo / ".venv" / "bin" / "activate"
    if not activate.is_file():
        print(f"no {activate}: create the virtual environment first (bash scripts/setup.sh)", file=sys.stderr)
        return 1
    activate.write_text(patch(activate.read_text(), repo))
    print(f"[setup] {activate}: sets DAGSTER_HOME={repo} and DAGSTER_MODULE_NAME={MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
