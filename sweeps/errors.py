"""The CLI's error boundary: a user's mistake becomes one line on stderr, a bug keeps its traceback.

    specforce train missing.yaml              # specforce train: config file 'missing.yaml': does not exist   (exit 2)
    specforce train missing.yaml --debug      # the same line after the traceback (or SPECFORCE_DEBUG=1)
    python -c "from sweeps.errors import UserError; print(UserError('--port', 'already in use', 5000))"

The contract every command follows (`sweeps.cli.main` wraps each one in `run_command`):

- Refusal: `specforce <command>: <what>: <why> (got <value>)` on stderr, ONE line, exit code 2, no traceback.
  <what> is the key path, flag or file at fault. Refusals happen before any work starts, so a refused command
  leaves no new files, folders, MLflow stores or runs behind.
- Anticipated error classes, printed as a refusal: `UserError` (raised by the pre-flight checks in sweeps/),
  `sweeps.spec.SpecError`, `trainers.training.config.ConfigError`, `trainers.training.checkpoint.CheckpointError`,
  `trainers.data.image_files.ImageReadError` (an image that breaks after indexing, met mid-training), `OSError` (missing
  or unwritable files, ports, refused connections; requests' errors derive from it), `yaml.YAMLError`,
  `pickle.UnpicklingError` and MLflow's `MlflowException`. The same classes raised after work started (an MLflow
  server that went away mid-sweep) print the same way; the command has then already marked its runs FAILED and said
  where its partial output is.
- Anything else is a bug: the traceback, then one line asking the user to report it; exit code 1.
- Ctrl-C: `specforce <command>: interrupted`, exit code 130.
- `--debug` (any position on the command line) or `SPECFORCE_DEBUG=1` prints the traceback of a refusal too.
- argparse's usage errors (unknown flag, bad number) are refusals as well: one line naming the flag, exit code 2.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

_UNSET = object()
MAX_CHARS = 2000  # a refusal is one line; a pathological message is cut rather than flooding the terminal


class UserError(ValueError):
    """A refusal: `<what>: <why> (got <value>)`. `what` names the flag, key path or file at fault."""

    def __init__(self, what: str, why: str, got: Any = _UNSET):
        self.what, self.why, self.got = what, why, got
        text = f"{what}: {why}"
        if got is not _UNSET:
            text += f" (got {got!r})"
        super().__init__(text)


def debug_enabled(argv: list[str] | None = None) -> bool:
    return os.environ.get("SPECFORCE_DEBUG", "").strip().lower() not in ("", "0", "false", "no") or \
        "--debug" in (sys.argv[1:] if argv is None else argv)


def _anticipated() -> tuple[type[BaseException], ...]:
    """The classes printed as a refusal. Optional libraries count only once imported: nothing else raises them."""
    import pickle

    classes: list[type[BaseException]] = [UserError, OSError, pickle.UnpicklingError]
    for module, name in (("yaml", "YAMLError"), ("sweeps.spec", "SpecError"), ("trainers.training.config", "ConfigError"),
                         ("trainers.training.checkpoint", "CheckpointError"), ("trainers.data.image_files", "ImageReadError"),
                         ("trainers.data.prepared_format", "PreparedDataError"),
                         ("mlflow.exceptions", "MlflowException")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            classes.append(getattr(mod, name))
    return tuple(classes)


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 3] + "..."


def format_error(err: BaseException) -> str:
    """The `<what>: <why> (got <value>)` part of a refusal."""
    if isinstance(err, OSError) and err.strerror and (err.filename or err.filename2):
        # the OS's own errors ("[Errno 2] No such file or directory: 'x'"): name the file first
        name = err.filename if err.filename is not None else err.filename2
        return one_line(f"{name}: {err.strerror}")
    mlflow_exc = sys.modules.get("mlflow.exceptions")
    if mlflow_exc is not None and isinstance(err, mlflow_exc.MlflowException):
        return one_line(f"MLflow: {err.message}")
    text = str(err)
    if not text or isinstance(err, (ConnectionError, TimeoutError)):
        text = f"{type(err).__name__}{': ' + text if text else ''}"
    return one_line(text)


def run_command(command: str, func: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run one CLI command under the contract in the module docstring; returns the exit code."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        print(f"specforce {command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the boundary: every error is either a refusal or a reported bug
        if isinstance(err, _anticipated()):
            if debug:
                traceback.print_exc()
            print(f"specforce {command}: {format_error(err)}", file=sys.stderr, flush=True)
            return 2
        traceback.print_exc()
        print(f"specforce {command}: unexpected {type(err).__name__}: {one_line(str(err))[:300]}. This is a bug in "
              "specforce: please report it with the command line and the traceback above.", file=sys.stderr,
              flush=True)
        return 1
