"""The sweep's terminal view (sweeps/progress.py; the log routing: sweeps/ray_log.py): the rendered block, warnings
shown once, the log file, and a real sweep run on a pseudo-terminal whose final screen is what a user sees.

    flock /tmp/specforce-ray.lock .venv/bin/python -m pytest tests/test_progress.py -q
"""
from __future__ import annotations

import io
import logging
import os
import pathlib
import pty
import re
import select
import subprocess
import sys
import time
import warnings

import pytest

from sweep_helpers import ROOT, cli_env, client_for, trial_runs, write_spec
from sweeps.progress import PhaseState, SweepConsole, TrialState, fmt_time, render_live, render_summary


def _state(now: float) -> PhaseState:
    state = PhaseState("grid", 4, "eval/denoise_loss", started=now - 100, done=2)
    state.running = {"p8-sf1-aaaaaa": TrialState("p8-sf1-aaaaaa", now - 30, 1600, 3200, 4.8521),
                     "p4-sf0-bbbbbb": TrialState("p4-sf0-bbbbbb", now - 5, 0, 3200)}
    return state


def test_live_block_counts_eta_and_latest_metric_per_running_trial():
    now = 1_000_000.0
    lines = render_live(_state(now), now, width=200)
    # 2 done + half of one running trial = 2.5 of 4 trials in 100 s -> 1.5 left at 40 s each
    assert lines[0].startswith("[grid] ") and "2/4 done, 2 running, 0 queued | 1:40 elapsed, ETA 1:00" in lines[0]
    assert lines[1] == "  p8-sf1-aaaaaa @ 1,600 images of 3,200: eval/denoise_loss=4.852"
    assert lines[2] == "  p4-sf0-bbbbbb @ 0 images of 3,200: training"
    assert len(lines) == 3
    narrow = render_live(_state(now), now, width=30)
    assert all(len(line) <= 30 for line in narrow)  # never wraps: the redraw relies on the line count
    assert render_summary(_state(now), now) == "[grid] 2/4 trials done in 1:40"


def test_eta_unknown_before_any_progress_and_hours_format():
    state = PhaseState("search", 3, "eval/denoise_loss", started=0.0)
    assert state.eta(50.0) is None and "ETA ?" in state.times(50.0)
    assert state.queued == 3
    assert fmt_time(3725) == "1:02:05" and fmt_time(65) == "1:05" and fmt_time(None) == "?"


def test_project_warnings_shown_once_library_warnings_only_logged(tmp_path):
    out = io.StringIO()
    log = tmp_path / "logs" / "x.log"
    line = (f"{ROOT}/trainers/evaluation/evaluator.py:610: RuntimeWarning: only 64 samples for 1024-dimensional features: "
            "the covariance is rank-deficient")
    with SweepConsole(log, out=out) as console:
        for pid in (11, 12, 13):  # three trials' workers raise the same warning
            console.routing.on_ray_lines({"pid": pid, "actor_name": "RayTrainWorker", "lines": [line, "  metrics[...] = x"]})
        console.routing.on_ray_lines({"pid": 14, "lines": ["/usr/lib/python3/x.py:1: UserWarning: a library's own"]})
    shown = out.getvalue().splitlines()
    assert shown == [f"warning: only 64 samples for 1024-dimensional features: the covariance is rank-deficient "
                     "(RuntimeWarning, trainers/evaluation/evaluator.py:610; shown once, every occurrence is in the log)"]
    text = log.read_text()
    assert text.count("RuntimeWarning") == 3 and "(RayTrainWorker pid=12)" in text and "a library's own" in text


def test_console_routes_output_to_the_log_and_restores_what_it_replaced(tmp_path):
    ray_logger = logging.getLogger("ray")
    before = (list(ray_logger.handlers), ray_logger.propagate, warnings.showwarning, sys.stdout)
    out = io.StringIO()
    log = tmp_path / "s.log"
    with SweepConsole(log, out=out) as console:
        console.print("header line")
        with console.capture():
            print("Tune's experiment table")
            ray_logger.warning("a Ray warning")
        warnings.warn_explicit("from our code", UserWarning, str(ROOT / "sweeps" / "runner.py"), 7)
    assert (list(ray_logger.handlers), ray_logger.propagate, warnings.showwarning, sys.stdout) == before
    assert out.getvalue().splitlines() == [
        "header line", "warning: from our code (UserWarning, sweeps/runner.py:7; shown once, every occurrence is in "
                       "the log)"]
    text = log.read_text()
    for expected in ("header line", "Tune's experiment table", "WARNING ray: a Ray warning", "from our code"):
        assert expected in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_redraws_in_place_and_leaves_one_summary_line(tmp_path):
    """The redraw logic alone (Tune events called directly with plain trial records); the real-sweep test below
    covers the same through Ray."""
    from types import SimpleNamespace

    term = _Terminal()
    trials = [SimpleNamespace(trial_id=f"t{i}", last_result={},
                              config={"plan": {"trial_id": f"p8-sf{i}-abc", "overrides": {}}}) for i in (0, 1)]
    with SweepConsole(tmp_path / "v.log", out=term) as console:
        console.print("[grid] 2 trial(s)")
        view = console.phase("grid", 2, "eval/denoise_loss", total_images=3200)
        for t in trials:
            view.on_trial_start(0, trials, t)
        view.on_trial_result(0, trials, trials[0], {"images": 1600, "eval/denoise_loss": 4.25})
        screen = screen_of(term.getvalue())
        assert screen[0] == "[grid] 2 trial(s)" and screen[1].startswith("[grid] ") and "0/2 done, 2 running" in screen[1]
        assert screen[2:] == ["  p8-sf0-abc @ 1,600 images of 3,200: eval/denoise_loss=4.25",
                              "  p8-sf1-abc @ 0 images of 3,200: training"]
        console.routing.on_ray_lines({"pid": 7, "lines": [f"{ROOT}/trainers/x.py:3: UserWarning: check this"]})
        for t in trials:
            view.on_trial_complete(0, trials, t)
        console.close_view()
    screen = screen_of(term.getvalue())
    assert screen[0] == "[grid] 2 trial(s)"
    assert screen[1].startswith("warning: check this (UserWarning, trainers/x.py:3;")
    assert re.fullmatch(r"\[grid\] 2/2 trials done in 0:0\d", screen[2]) and len(screen) == 3, screen


def screen_of(stream: str) -> list[str]:
    """The final screen of a terminal that received `stream`: the escapes the view uses (CR, LF, ESC[nF cursor
    up n lines to column 0, ESC[J clear to the end, ESC[K clear the line) and colour codes (ignored)."""
    lines: list[str] = [""]
    row = col = 0
    i = 0
    while i < len(stream):
        ch = stream[i]
        if ch == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", stream[i:])
            assert m, repr(stream[i:i + 10])
            n, op = int(m[1] or 1), m[2]
            if op == "F":
                row, col = max(0, row - n), 0
            elif op == "J":
                lines[row] = lines[row][:col]
                del lines[row + 1:]
            elif op == "K":
                lines[row] = lines[row][:col]
            i += len(m[0])
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return [line.rstrip() for line in lines if line.strip()]


def run_on_pty(args: list[str], cwd: pathlib.Path, timeout: float = 900) -> tuple[int, str]:
    """Runs the CLI with a pseudo-terminal as stdout/stderr (as a user's shell would) and returns what it wrote."""
    master, slave = pty.openpty()
    env = {**cli_env(), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", errors="replace")


def test_real_sweep_on_a_terminal_shows_one_quiet_view(tmp_path):
    spec = write_spec(tmp_path / "view.yaml", name="view",
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 1600, "ema_decays": [0.99]},
                      base__eval={"every_images": 800, "num_samples": 64, "batch_size": 64,
                                  "metrics": ["fd_pixel"], "denoise_batch": 32, "denoise_t_points": 10,
                                  "grid_size": 4})
    rc, stream = run_on_pty(["sweep", str(spec), "--num-cpus", "2"], tmp_path)
    (tmp_path / "terminal.txt").write_text(stream)  # the raw byte stream, to look at when this test fails
    screen = screen_of(stream)
    assert rc == 0, "\n".join(screen)
    text = "\n".join(screen)
    # what the user sees: the header, the log's path, the phase's summary line, the command's result; no Ray noise
    assert len(screen) <= 8, text
    # the byte stream grows with the number of redraws (one a second), so its size depends on how long the sweep took;
    # what must not grow is each redraw: every one (it starts by clearing to the end of the screen) is a few lines
    # cut to the terminal's width, whatever the machine's speed. Longer lines are the permanent messages above the
    # block (a warning, a failed trial): each is written once and stays on the final screen.
    frames = stream.split("\x1b[J")
    assert len(frames) > 1, stream[-3000:]
    long_lines = []
    for frame in frames[1:]:
        lines = re.sub(r"\x1b\[\d*[A-Za-z]", "", frame).replace("\r", "").splitlines()
        assert len(lines) <= 8, frame
        long_lines += [line for line in lines if len(line) > 120]
    assert len(long_lines) == len(set(long_lines)) and all(line.rstrip() in screen for line in long_lines), long_lines
    assert re.search(r"^\[grid\] 2/2 trials done in \d+:\d\d$", text, re.M), text
    assert "sweep 'view': 2 trials (0 failed)" in text
    for noise in ("TrainingReport", "PreemptionWatcher", "RayTrainWorker", "Configuration for experiment",
                  "Started a local Ray instance", "INFO"):
        assert noise not in stream, noise
    # the rank-deficient covariance warning (64 samples, 1,024 dims): raised by both trials, shown once
    assert text.count("warning: only 64 samples for 1024-dimensional features") == 1, text
    m = re.search(r"logs of Ray and its workers: (\S+\.log)", text)
    assert m, text
    log = pathlib.Path(m[1])
    assert log.parent == tmp_path / "ray_results" / "view" / "logs"
    logged = log.read_text()
    assert "Reporting training result" in logged and "Configuration for experiment" in logged
    assert logged.count("RuntimeWarning: only 64 samples") == 2  # one per trial: every occurrence is kept
    # the live block was drawn while trials ran: the progress bar with counts, and a trial's primary metric
    assert re.search(r"\[grid\] .*\| \d/2 done, \d running, \d queued \| \d+:\d\d elapsed, ETA", stream)
    assert re.search(r"sf[01]-\w+ @ 800 images of 1,600: eval/denoise_loss=\d", stream), stream[-3000:]
    runs = trial_runs(client_for(tmp_path), "view")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.parametrize("command", [["sweep", "x.yaml"], ["demo"], ["submit", "x.yaml", "--address", "http://h:8265"]])
def test_verbose_flag_on_sweep_demo_and_submit(command):
    from sweeps.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([*command, "--verbose"]).verbose is True
    assert parser.parse_args(command).verbose is False
