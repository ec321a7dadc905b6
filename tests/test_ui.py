"""`specforce ui`: the MLflow UI on 127.0.0.1 against the sweep store; refuses a public bind unless asked."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from proc_helpers import listen_addresses

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_loopback(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert body is not None and "OK" in body
        assert (tmp_path / "mlflow.db").exists()  # the default store of the working dir
        assert listen_addresses(port) == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_refuses_a_public_bind_without_the_explicit_flag(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "ui", "--host", "0.0.0.0"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "has no authentication" in out.stderr
