"""What a sweep shows on the terminal: one live progress view per phase (Ray's and the workers' logs go to a file).

    specforce sweep sweeps/configs/smoke.yaml              # the view; logs in <storage>/<name>/logs/<time>.log
    specforce sweep sweeps/configs/smoke.yaml --verbose    # a line per evaluation; Ray's and the workers' logs too
    .venv/bin/python -m pytest tests/test_progress.py -q -k "not real_sweep"   # CPU, no Ray cluster

By default (quiet) the terminal gets the sweep's header, the log file's path, one progress view per phase (trials
done / running / queued, elapsed and ETA, the latest primary metric of each running trial) and the final lines of
the command. Everything else a sweep prints goes to the log file (sweeps/ray_log.py routes it there): Ray's and
Tune's own output (Tune prints its experiment table even at verbose=0), MLflow's logging and the stdout/stderr of
every Ray process. A warning raised by this project's own code is shown once per sweep, with its file and line.

On a terminal the view is redrawn in place (at most once a second, and on every trial event); when the output is a
file or a pipe (CI, `specforce logs`) it prints one line per evaluation and per finished trial instead.
`--verbose` prints a line per evaluation (`ProgressPrinter`) between Ray's log lines, which are streamed as well
(and still copied to the file).

Both views are Tune callbacks that run in the driver; a trial is named by sweeps/trial_identity.py's `trial_key`.
"""
from __future__ import annotations

import datetime
import math
import os
import pathlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ray.tune import Callback

import specforce_contracts as C
from sweeps.ray_log import LogRouting, LogSink
from sweeps.trial_identity import identify, trial_key

REDRAW_S = 1.0  # live view: redraws at most this often between trial events (elapsed and ETA tick)
MAX_TRIAL_LINES = 8  # live view: running trials listed one per line, the rest counted


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
    text = f"{trial.key} @ {trial.images:,} images{of}"  # "@ N images": scripts grep for it
    return text + (f": {primary}={fmt_value(trial.metric)}" if trial.metric is not None else ": training")


def render_summary(state: PhaseState, now: float) -> str:
    failed = f", {state.failed} FAILED" if state.failed else ""
    return f"[{state.phase}] {state.done}/{state.total} trials done{failed} in {fmt_time(now - state.started)}"


class SweepConsole:
    """The terminal and the log file of one sweep invocation; `phase()` gives each phase's Tune callback.

    Use as a context manager around the whole sweep: its `routing` (sweeps/ray_log.py) sends Ray's, MLflow's and the
    workers' output to the log file (quiet) or to both (verbose), and restores every handler it replaced on exit.
    """

    def __init__(self, log_path: pathlib.Path, *, verbose: bool = False, out: TextIO | None = None):
        self.out = out or sys.stdout  # the terminal, captured before anything is redirected
        self.verbose = verbose
        self.live = (not verbose) and bool(getattr(self.out, "isatty", lambda: False)())
        self.log = LogSink(log_path)
        self.routing = LogRouting(self.log, verbose=verbose, show=self._show)
        self.view: ProgressView | None = None  # the phase being shown, to interleave messages with its block

    # ------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SweepConsole":
        self.log.write(f"\n=== specforce sweep, {datetime.datetime.now().isoformat(timespec='seconds')}, "
                       f"pid {os.getpid()}, {'verbose' if self.verbose else 'quiet'} ===\n")
        self.routing.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.close_view()
        self.routing.__exit__(*exc)
        self.log.close()

    def print(self, text: str) -> None:
        """A line the user should see (and the log keeps), placed above a live block."""
        self.log.write(text + "\n")
        self._show(text)

    def _show(self, text: str) -> None:
        if self.view is not None:
            self.view.message(text)
        else:
            print(text, file=self.out, flush=True)

    def hook_ray(self) -> None:
        """After ray.init: Ray's processes' output to the log file (sweeps/ray_log.py)."""
        self.routing.hook_ray()

    def capture(self):
        """Around `tuner.fit()`: what Tune prints goes to the log file (quiet mode only)."""
        return self.routing.capture()

    # --------------------------------------------------------------------------------------------- phases
    def phase(self, phase: str, total: int, primary: str, total_images: int | None = None) -> "ProgressView":
        self.close_view()
        self.view = ProgressView(self, phase, total, primary, total_images)
        return self.view

    def close_view(self) -> None:
        if self.view is not None:
            self.view.finish()
            self.view = None


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
        from sweeps.trial import mark

        key, overrides = identify(trial.config, trial.trial_id)
        mark(key, "tune_trial_start")
        total = int(overrides.get("optim.total_images", self.total_images) or 0) or None
        self.state.running[key] = TrialState(key, time.time(), total_images=total)
        self._draw(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = trial_key(trial)
        t = self.state.running.setdefault(key, TrialState(key, time.time(), total_images=self.total_images))
        t.images = int(result.get(C.IMAGES_KEY, t.images) or 0)
        if self.state.primary in result:
            t.metric = float(result[self.state.primary])
        if not (t.total_images and t.images >= t.total_images):  # the final result: the "finished" line says it
            self._line(trial_text(t, self.state.primary))
        self._draw(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        from sweeps.trial import mark

        key = trial_key(trial)
        mark(key, "tune_trial_complete")
        t = self.state.running.pop(key, None)
        self.state.done += 1
        value = t.metric if t else (trial.last_result or {}).get(self.state.primary)
        self.state.last_finished = (key, value)
        shown = f": {self.state.primary}={fmt_value(value)}" if value is not None else ""
        self._line(f"trial {key} finished{shown}")
        self._draw(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        key = trial_key(trial)
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


class ProgressPrinter(Callback):
    """The verbose view: one line per evaluation and per finished trial (trials done/total and current metrics),
    printed between Ray's streamed log lines."""

    def __init__(self, phase: str, total: int, metric: str | None):
        self.phase, self.total, self.metric = phase, total, metric
        self.done = 0
        self.t0 = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        from sweeps.trial import mark

        mark(trial_key(trial), "tune_trial_start")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        shown = {k: result[k] for k in (self.metric, C.DENOISE_LOSS, C.FD_PIXEL, C.TRAIN_LOSS)
                 if k and k in result}
        text = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
        print(f"[{self.phase}] {trial_key(trial)} @ {result.get(C.IMAGES_KEY, 0):,} images: {text}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        from sweeps.trial import mark

        mark(trial_key(trial), "tune_trial_complete")
        self.done += 1
        print(f"[{self.phase}] trial {trial_key(trial)} finished ({self.done}/{self.total}, "
              f"{time.time() - self.t0:.0f}s elapsed)", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        error_file = getattr(trial, "error_file", None)
        print(f"[{self.phase}] trial {trial_key(trial)} FAILED ({self.done}/{self.total}): {_last_line(error_file)} "
              f"(traceback: {error_file})", flush=True)
