"""What a sweep shows on the terminal: one live progress view; Ray's and the workers' logs go to a file.

    specforce sweep sweeps/configs/smoke.yaml              # the view; logs in <storage>/<name>/logs/<time>.log
    specforce sweep sweeps/configs/smoke.yaml --verbose    # Ray's and the workers' logs streamed as well
    python -m sweeps.progress                              # draws a sample view (no Ray), to see the layout

By default (quiet) the terminal gets the sweep's header, the log file's path, one progress view per phase (trials
done / running / queued, elapsed and ETA, the latest primary metric of each running trial) and the final lines of
the command. Everything else a sweep prints goes to the log file: Ray's and Tune's own output (Tune prints its
experiment table even at verbose=0), MLflow's logging and the stdout/stderr of every Ray process (Train controller,
workers: `TrainingReport(...)` dumps, the PreemptionWatcher error line). A Python warning raised by this project's
own code (e.g. a rank-deficient covariance) is something a user can act on: it is shown once per sweep, however
many trials raise it, with its file and line.

On a terminal the view is redrawn in place (at most once a second, and on every trial event); when the output is a
file or a pipe (CI, `specforce logs`) it prints one line per evaluation and per finished trial instead.
`--verbose` keeps today's behaviour: a line per evaluation and every Ray log line streamed (and still copied to the
file).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import logging
import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, TextIO

from ray.tune import Callback

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
# a Python warning as the warnings module formats it: "<file>:<line>: <Category>: <message>"
WARNING_LINE = re.compile(r"(?P<file>/\S+\.py):(?P<line>\d+): (?P<category>\w*Warning): (?P<message>.+)")
REDRAW_S = 1.0  # live view: redraws at most this often between trial events (elapsed and ETA tick)
MAX_TRIAL_LINES = 8  # live view: running trials listed one per line, the rest counted
LOGGERS = ("ray", "mlflow", "alembic", "py.warnings")  # driver-side loggers whose records go to the file


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def fmt_value(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class TrialState:
    key: str
    started: float
    images: int = 0
    total_images: int | None = None
    metric: float | None = None  # latest primary metric, None before the first evaluation


@dataclass
class PhaseState:
    """What the view shows for one phase; `render_*` turn it into text (pure functions of it and the clock)."""

    phase: str
    total: int
    primary: str
    started: float
    done: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # failed trial -> its exception line, repeated at the end
    running: dict[str, TrialState] = field(default_factory=dict)
    last_finished: tuple[str, float | None] | None = None

    @property
    def queued(self) -> int:
        return max(0, self.total - self.done - self.failed - len(self.running))

    def progress(self) -> float:
        """Trials' worth of work done: finished trials plus the image fraction of running ones."""
        partial = sum(min(1.0, t.images / t.total_images) for t in self.running.values() if t.total_images)
        return self.done + self.failed + partial

    def eta(self, now: float) -> float | None:
        done = self.progress()
        if done <= 0:
            return None
        return (now - self.started) * (self.total - done) / done

    def counts(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total} done{failed}, {len(self.running)} running, {self.queued} queued"

    def times(self, now: float) -> str:
        return f"{fmt_time(now - self.started)} elapsed, ETA {fmt_time(self.eta(now))}"


def render_live(state: PhaseState, now: float, width: int) -> list[str]:
    """The block a terminal shows: a bar with counts and times, then one line per running trial."""
    from tqdm import tqdm

    finished = state.done + state.failed
    head = tqdm.format_meter(finished, state.total, now - state.started, prefix=f"[{state.phase}] ",
                             bar_format="{desc}{bar:20}| " + f"{state.counts()} | {state.times(now)}")
    lines = [head]
    for trial in list(state.running.values())[:MAX_TRIAL_LINES]:
        lines.append("  " + trial_text(trial, state.primary))
    extra = len(state.running) - MAX_TRIAL_LINES
    if extra > 0:
        lines.append(f"  ... and {extra} more running")
    if state.last_finished and len(lines) <= MAX_TRIAL_LINES:
        key, value = state.last_finished
        lines.append(f"  last finished: {key}" + (f" {state.primary}={fmt_value(value)}" if value is not None else ""))
    return [line if len(line) <= width else line[: max(1, width - 1)] + "…" for line in lines]


def trial_text(trial: TrialState, primary: str) -> str:
    of = f" of {trial.total_images:,}" if trial.total_images else ""
    text = f"{trial.key} @ {trial.images:,} images{of}"  # "@ N images" as before issue 13: scripts grep for it
    return text + (f": {primary}={fmt_value(trial.metric)}" if trial.metric is not None else ": training")


def render_summary(state: PhaseState, now: float) -> str:
    failed = f", {state.failed} FAILED" if state.failed else ""
    return f"[{state.phase}] {state.done}/{state.total} trials done{failed} in {fmt_time(now - state.started)}"


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


class SweepConsole:
    """The terminal and the log file of one sweep invocation; `phase()` gives each phase's Tune callback.

    Use as a context manager around the whole sweep: it routes Ray's, MLflow's and the workers' output to the log
    file (quiet) or to both (verbose), and restores every handler it replaced on exit.
    """

    def __init__(self, log_path: pathlib.Path, *, verbose: bool = False, out: TextIO | None = None):
        self.out = out or sys.stdout  # the terminal, captured before anything is redirected
        self.verbose = verbose
        self.live = (not verbose) and bool(getattr(self.out, "isatty", lambda: False)())
        self.log = LogSink(log_path)
        self._shown_warnings: set[tuple[str, str, str]] = set()
        self._saved_handlers: dict[str, tuple[list[logging.Handler], bool]] = {}
        self._saved_showwarning = None
        self._ray_hooked = False
        self.view: ProgressView | None = None  # the phase being shown, to interleave messages with its block

    # ------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SweepConsole":
        self.log.write(f"\n=== specforce sweep, {datetime.datetime.now().isoformat(timespec='seconds')}, "
                       f"pid {os.getpid()}, {'verbose' if self.verbose else 'quiet'} ===\n")
        handler = logging.StreamHandler(self.log)
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
        self.close_view()
        if self._ray_hooked:
            self._unhook_ray()
        for name, (handlers, propagate) in self._saved_handlers.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        if self._saved_showwarning is not None:
            warnings.showwarning = self._saved_showwarning
        self.log.close()

    def print(self, text: str) -> None:
        """A line the user should see (and the log keeps), placed above a live block."""
        self.log.write(text + "\n")
        if self.view is not None:
            self.view.message(text)
        else:
            print(text, file=self.out, flush=True)

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
                               "global_worker_stdstream_dispatcher; sweeps/progress.py needs updating for it")
        names = [name for name, _ in dispatcher.handlers]
        for name in ("specforce_log_file", "specforce_late_log"):  # an earlier sweep in this process
            dispatcher.remove_handler(name)
        if not self.verbose:
            dispatcher.remove_handler("ray_print_logs")
        elif "ray_print_logs" not in names and ray_worker.global_worker.mode is not None:
            import functools  # verbose after a quiet sweep in the same process: Ray's printer back

            ignore = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
            dispatcher.add_handler("ray_print_logs",
                                   functools.partial(ray_worker.print_to_stdstream, ignore_prefix=ignore))
        dispatcher.add_handler("specforce_log_file", self._on_ray_lines)
        self._ray_hooked = True

    def _unhook_ray(self) -> None:
        """Quiet stays quiet after the sweep: Ray stays up in this process, and what its processes print while they
        wind down is appended to the same log file rather than to the terminal under the command's last lines."""
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        dispatcher.remove_handler("specforce_log_file")
        if not self.verbose:
            path = self.log.path

            def late(data: dict[str, Any]) -> None:
                with path.open("a", encoding="utf-8", errors="replace") as f:
                    f.write("".join(f"(pid={data.get('pid')}) {line}\n" for line in data.get("lines", [])))

            dispatcher.add_handler("specforce_late_log", late)
        self._ray_hooked = False

    def _on_ray_lines(self, data: dict[str, Any]) -> None:
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')})"
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its status table every few seconds: keep only events, as Ray does
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        self.log.write("".join(f"{prefix} {line}\n" for line in lines))
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
        text = (f"warning: {message.strip()} ({category}, {where}:{lineno}; shown once, every occurrence is in "
                f"the log)")
        if self.view is not None:
            self.view.message(text)
        else:
            print(text, file=self.out, flush=True)

    def _showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.log.write(warnings.formatwarning(message, category, filename, lineno, line))
        if self.verbose and self._saved_showwarning is not None:
            self._saved_showwarning(message, category, filename, lineno, file, line)
            return
        self.warn_once(str(filename), str(lineno), category.__name__, str(message))

    # --------------------------------------------------------------------------------------------- phases
    def phase(self, phase: str, total: int, primary: str, total_images: int | None = None) -> "ProgressView":
        self.close_view()
        self.view = ProgressView(self, phase, total, primary, total_images)
        return self.view

    def close_view(self) -> None:
        if self.view is not None:
            self.view.finish()
            self.view = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Around `tuner.fit()`: what Tune and the callbacks print goes to the log file (quiet mode only)."""
        if self.verbose:
            yield
            return
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = _Stream(self.log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


class ProgressView(Callback):
    """One phase's progress: a Tune callback that draws the live block, or prints a line per event."""

    def __init__(self, console: SweepConsole, phase: str, total: int, primary: str, total_images: int | None):
        self.console, self.out = console, console.out
        self.state = PhaseState(phase, total, primary, time.time())
        self.total_images = total_images
        self._drawn = 0  # lines of the live block currently on screen
        self._last_draw = 0.0
        self._finished = False

    def __getstate__(self):  # Tune pickles its run config, callbacks included, into the experiment state
        return {"state": self.state}

    def __setstate__(self, state):  # a restored copy is inert; run_sweep installs a fresh view on resume
        self.__dict__.update(state)
        self.console = self.out = None
        self._drawn, self._last_draw, self._finished, self.total_images = 0, 0.0, True, None

    # ------------------------------------------------------------------------------------ Tune events
    def on_trial_start(self, iteration, trials, trial, **info):
        from sweeps.runner import _key
        from sweeps.trial import mark

        key = _key(trial)
        mark(key, "tune_trial_start")
        overrides = (trial.config.get("plan") or {}).get("overrides", {})
        total = int(overrides.get("optim.total_images", self.total_images) or 0) or None
        self.state.running[key] = TrialState(key, time.time(), total_images=total)
        self._draw(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from sweeps.runner import _key

        key = _key(trial)
        t = self.state.running.setdefault(key, TrialState(key, time.time(), total_images=self.total_images))
        t.images = int(result.get("images", t.images) or 0)
        if self.state.primary in result:
            t.metric = float(result[self.state.primary])
        if not (t.total_images and t.images >= t.total_images):  # the final result: the "finished" line says it
            self._line(trial_text(t, self.state.primary))
        self._draw(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        from sweeps.runner import _key
        from sweeps.trial import mark

        key = _key(trial)
        mark(key, "tune_trial_complete")
        t = self.state.running.pop(key, None)
        self.state.done += 1
        value = t.metric if t else (trial.last_result or {}).get(self.state.primary)
        self.state.last_finished = (key, value)
        shown = f": {self.state.primary}={fmt_value(value)}" if value is not None else ""
        self._line(f"trial {key} finished{shown}")
        self._draw(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        from sweeps.runner import _key

        key = _key(trial)
        self.state.running.pop(key, None)
        self.state.failed += 1
        error_file = getattr(trial, "error_file", None)
        self.state.errors[key] = _last_line(error_file)
        self.console.print(f"[{self.state.phase}] trial {key} FAILED: {self.state.errors[key]} "
                           f"(traceback: {error_file}; Ray's logs: {self.console.log.path})")
        self._draw(force=True)

    def on_step_end(self, iteration, trials, **info):
        self._draw()

    # ------------------------------------------------------------------------------------------ drawing
    def _line(self, text: str) -> None:
        """An event line: always in the log (next to Ray's output); on the terminal only without a live block."""
        now = time.time()
        line = f"[{self.state.phase}] {text} ({self.state.counts()}; {self.state.times(now)})"
        self.console.log.write(line + "\n")
        if not self.console.live:
            print(line, file=self.out, flush=True)

    def _draw(self, force: bool = False) -> None:
        if self._finished or not self.console.live:
            return
        now = time.time()
        if not force and now - self._last_draw < REDRAW_S:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 24)).columns
        self._replace(render_live(self.state, now, width))

    def _replace(self, lines: list[str]) -> None:
        # cursor to the start of the block, clear to the end of the screen, draw: lines never wrap (cut to width),
        # so the block's height is its line count
        up = f"\x1b[{self._drawn}F" if self._drawn else "\r"
        self.out.write(up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    def message(self, text: str) -> None:
        """A permanent line above the live block (a warning, a failed trial)."""
        if self.console.live and self._drawn and not self._finished:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J{text}\n")
            self._drawn = 0
            self._draw(force=True)
        else:
            print(text, file=self.out, flush=True)

    def finish(self) -> None:
        if self._finished:
            return
        summary = render_summary(self.state, time.time())
        self.console.log.write(summary + "\n")
        # the failures again under the summary: the lines printed while the phase ran may have scrolled away
        failures = [f"[{self.state.phase}] FAILED trial {key}: {error}" for key, error in self.state.errors.items()]
        for line in failures:
            self.console.log.write(line + "\n")
        if self.console.live:
            self._replace([summary])
            for line in failures:
                print(line, file=self.out, flush=True)
        else:
            print(summary, *failures, sep="\n", file=self.out, flush=True)
        self._finished = True


def _last_line(path: str | None) -> str:
    """The exception line of a trial's error file (Tune writes the traceback there)."""
    if not path or not os.path.isfile(path):
        return "see the log"
    lines = [line.strip() for line in pathlib.Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return (lines[-1] if lines else "empty error file")[:300]


def log_path_for(storage: str, name: str) -> pathlib.Path:
    """`<storage>/<name>/logs/<time>.log`; a remote storage URI (s3://...) logs to the local temp folder."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if "://" in storage:
        return pathlib.Path(tempfile.gettempdir()) / "specforce-logs" / f"{name}-{stamp}.log"
    return pathlib.Path(storage) / name / "logs" / f"{stamp}.log"


if __name__ == "__main__":  # a sample of the live block, for eyeballing the layout
    from specforce_contracts import DENOISE_LOSS

    now = time.time()
    demo = PhaseState("grid", 12, DENOISE_LOSS, now - 150, done=5)
    demo.running = {"p16-sf0-1a2b3c": TrialState("p16-sf0-1a2b3c", now - 40, 9600, 19200, 0.412),
                     "p8-sf1-4d5e6f": TrialState("p8-sf1-4d5e6f", now - 10, 0, 19200)}
    demo.last_finished = ("p16-sf1-777777", 0.388)
    print("\n".join(render_live(demo, now, shutil.get_terminal_size((100, 24)).columns)))
    print(render_summary(demo, now))
