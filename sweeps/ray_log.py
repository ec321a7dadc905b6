"""Where a sweep's own output goes: the log file, Ray's forwarded process output, Python logging and warnings.

    specforce sweep sweeps/configs/smoke.yaml              # quiet: all of it in <storage>/<name>/logs/<time>.log
    specforce sweep sweeps/configs/smoke.yaml --verbose    # streamed to the terminal as well (and still logged)
    .venv/bin/python -m pytest tests/test_progress.py -q -k "warnings or routes"   # CPU, no Ray cluster

`LogRouting` (entered by the sweep's console, sweeps/progress.py) sends the driver's loggers (Ray, MLflow, alembic,
py.warnings), Python warnings, what Tune prints while it runs (`capture`) and, once Ray is up (`hook_ray`), the
stdout/stderr of every Ray process (Train controller, workers) to the log file. Ray forwards those lines through a
private dispatcher in `ray._private.worker`; the hook replaces Ray's printer there, which is why it checks that the
dispatcher exists and says which module to update when a Ray version renames it.

A Python warning raised by this project's own code (e.g. a rank-deficient covariance) is something a user can act on:
it is shown once per sweep through the console, however many trials raise it, with its file and line; a library's
warnings stay in the file.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import io
import logging
import pathlib
import re
import sys
import tempfile
import threading
import warnings
from typing import Any, Callable, Iterator

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
# a Python warning as the warnings module formats it: "<file>:<line>: <Category>: <message>"
WARNING_LINE = re.compile(r"(?P<file>/\S+\.py):(?P<line>\d+): (?P<category>\w*Warning): (?P<message>.+)")
LOGGERS = ("ray", "mlflow", "alembic", "py.warnings")  # driver-side loggers whose records go to the file
# our handlers on Ray's dispatcher: removed again by the next sweep in the same process
FILE_HANDLER, LATE_HANDLER, RAY_PRINTER = "specforce_log_file", "specforce_late_log", "ray_print_logs"


def log_path_for(storage: str, name: str) -> pathlib.Path:
    """`<storage>/<name>/logs/<time>.log`; a remote storage URI (s3://...) logs to the local temp folder."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if "://" in storage:
        return pathlib.Path(tempfile.gettempdir()) / "specforce-logs" / f"{name}-{stamp}.log"
    return pathlib.Path(storage) / name / "logs" / f"{stamp}.log"


class LogSink:
    """The log file, written from several threads (main loop, Ray's log listener, logging handlers)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._file.write(text)
            self._file.flush()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _Stream(io.TextIOBase):
    """sys.stdout/sys.stderr stand-in while a quiet sweep runs Tune: everything printed goes to the log file."""

    def __init__(self, sink: LogSink):
        self.sink = sink

    def write(self, text: str) -> int:
        return self.sink.write(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class LogRouting:
    """Routes a sweep's output into `sink` while entered, and restores every handler it replaced on exit.

    `show(text)` puts a line on the terminal (the console places it above its live block); it is how a project
    warning is shown once. Verbose, everything still reaches the terminal as it would without the routing."""

    def __init__(self, sink: LogSink, *, verbose: bool, show: Callable[[str], None]):
        self.sink, self.verbose, self.show = sink, verbose, show
        self._shown_warnings: set[tuple[str, str, str]] = set()
        self._saved_handlers: dict[str, tuple[list[logging.Handler], bool]] = {}
        self._saved_showwarning = None
        self._ray_hooked = False

    # ------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "LogRouting":
        handler = logging.StreamHandler(self.sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in LOGGERS:
            logger = logging.getLogger(name)
            self._saved_handlers[name] = (list(logger.handlers), logger.propagate)
            logger.handlers = ([*logger.handlers] if self.verbose else []) + [handler]
            logger.propagate = logger.propagate and self.verbose  # quiet: not to the root logger's stderr either
        self._saved_showwarning = warnings.showwarning
        warnings.showwarning = self._showwarning
        return self

    def __exit__(self, *exc) -> None:
        if self._ray_hooked:
            self._unhook_ray()
        for name, (handlers, propagate) in self._saved_handlers.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        if self._saved_showwarning is not None:
            warnings.showwarning = self._saved_showwarning

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Around `tuner.fit()`: what Tune and the callbacks print goes to the log file (quiet mode only)."""
        if self.verbose:
            yield
            return
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = _Stream(self.sink)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved

    # --------------------------------------------------------------------------------------- Ray logs
    def hook_ray(self) -> None:
        """After ray.init(log_to_driver=True): Ray's forwarded process output goes to the file (and, verbose, on).

        Ray forwards every process's stdout/stderr to the driver through one dispatcher; its `ray_print_logs`
        handler prints them. Quiet, that handler is removed and ours writes the lines to the log file instead.
        """
        from ray._private import worker as ray_worker

        dispatcher = getattr(ray_worker, "global_worker_stdstream_dispatcher", None)
        if dispatcher is None or not hasattr(dispatcher, "add_handler"):
            raise RuntimeError(f"ray {__import__('ray').__version__}: ray._private.worker has no "
                               "global_worker_stdstream_dispatcher; sweeps/ray_log.py needs updating for it")
        names = [name for name, _ in dispatcher.handlers]
        for name in (FILE_HANDLER, LATE_HANDLER):  # an earlier sweep in this process
            dispatcher.remove_handler(name)
        if not self.verbose:
            dispatcher.remove_handler(RAY_PRINTER)
        elif RAY_PRINTER not in names and ray_worker.global_worker.mode is not None:
            # verbose after a quiet sweep in the same process: Ray's printer back
            ignore = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
            dispatcher.add_handler(RAY_PRINTER, functools.partial(ray_worker.print_to_stdstream, ignore_prefix=ignore))
        dispatcher.add_handler(FILE_HANDLER, self.on_ray_lines)
        self._ray_hooked = True

    def _unhook_ray(self) -> None:
        """Quiet stays quiet after the sweep: Ray stays up in this process, and what its processes print while they
        wind down is appended to the same log file rather than to the terminal under the command's last lines."""
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        dispatcher.remove_handler(FILE_HANDLER)
        if not self.verbose:
            path = self.sink.path

            def late(data: dict[str, Any]) -> None:
                with path.open("a", encoding="utf-8", errors="replace") as f:
                    f.write("".join(f"(pid={data.get('pid')}) {line}\n" for line in data.get("lines", [])))

            dispatcher.add_handler(LATE_HANDLER, late)
        self._ray_hooked = False

    def on_ray_lines(self, data: dict[str, Any]) -> None:
        """One batch of a Ray process's output lines, as Ray's dispatcher hands them over."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')})"
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its status table every few seconds: keep only events, as Ray does
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        self.sink.write("".join(f"{prefix} {line}\n" for line in lines))
        for line in lines:
            self.scan_for_warning(line)

    # ------------------------------------------------------------------------------------------ warnings
    def scan_for_warning(self, line: str) -> None:
        m = WARNING_LINE.search(line)
        if m:
            self.warn_once(m["file"], m["line"], m["category"], m["message"])

    def warn_once(self, filename: str, lineno: str, category: str, message: str) -> None:
        """A warning raised by this project's code is shown once per sweep; others stay in the log file."""
        try:
            where = pathlib.Path(filename).resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            return  # a library's warning: in the log file only
        if where.parts and where.parts[0] in (".venv", "venv", "site-packages"):
            return
        key = (str(where), str(lineno), category)
        if key in self._shown_warnings:
            return
        self._shown_warnings.add(key)
        self.show(f"warning: {message.strip()} ({category}, {where}:{lineno}; shown once, every occurrence is in "
                  f"the log)")

    def _showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.sink.write(warnings.formatwarning(message, category, filename, lineno, line))
        if self.verbose and self._saved_showwarning is not None:
            self._saved_showwarning(message, category, filename, lineno, file, line)
            return
        self.warn_once(str(filename), str(lineno), category.__name__, str(message))
