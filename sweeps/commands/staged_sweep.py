"""The cluster side of `specforce submit` for a spec from outside the project: sweep the staged copy of the spec.

`specforce submit` (sweeps/commands/submit.py) stages such a spec as a package `specforce_spec_<hash>` holding
spec.yaml, sent with the job in `py_modules`, and makes this module the job's entrypoint:

    python -m sweeps.commands.staged_sweep specforce_spec_<hash> --tracking-uri URI --storage DIR [--resume]

Ray extracts the package somewhere on the node's PYTHONPATH; it is found with find_spec (nothing is imported) and its
spec.yaml runs through `specforce sweep` with the remaining arguments. A module of its own because it calls the CLI,
which in turn dispatches to the submit command.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys


def run_staged(argv: list[str]) -> int:
    """`argv` = [staged package name, sweep arguments...]; returns the sweep's exit code."""
    from sweeps.cli import main

    found = importlib.util.find_spec(argv[0])
    if found is None or not found.submodule_search_locations:
        raise SystemExit(f"specforce submit: staged spec package {argv[0]!r} not on this node's path")
    spec_file = pathlib.Path(list(found.submodule_search_locations)[0]) / "spec.yaml"
    return main(["sweep", str(spec_file), *argv[1:]])


if __name__ == "__main__":
    sys.exit(run_staged(sys.argv[1:]))
