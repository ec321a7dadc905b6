"""report.html in a real headless Chromium: it renders, every image decodes, and the console stays clean.

Drives Chromium over the DevTools protocol with a minimal standard-library WebSocket client (the venv has no
websocket package). Skips, saying why, when no chromium binary is installed (Debian: `apt-get install chromium`).
SPECFORCE_SCREENSHOT / SPECFORCE_FIRST_SCREEN name where the whole page / the first 1280x900 screen are saved.

    SPECFORCE_FIRST_SCREEN=/tmp/first.png .venv/bin/python -m pytest tests/test_analysis_browser.py -q
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from analysis.report import build_report
from synthetic_sweep import log_synthetic_sweep

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")


class DevTools:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, (fragmented) frames in."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        host_port, path = ws_url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools socket closed")
            buf += chunk
        return buf

    def _frame(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            message += self._read(length)
            if b0 & 0x80:  # FIN
                return message.decode()

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                  if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while True:
            msg = json.loads(self._frame())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self._frame()))
        raise TimeoutError(method)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{base}/mlflow.db"
    log_synthetic_sweep(uri, "demo", seeds=(0, 1, 2), effects={8: -6.0}, search_trials=6, sample_images=True)
    return build_report(["demo"], uri, base / "out", log_to_mlflow=False, n_resamples=2_000)


@pytest.fixture
def browser(tmp_path):
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,1600",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"  # port 0: Chromium picks a free port and writes it here
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def inspect(browser: DevTools, page: Path) -> tuple[list[dict], str, list[dict]]:
    """Load a file; return its images (complete, naturalWidth), its visible text and the console/log errors."""
    for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
        browser.send(domain)
    browser.send("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    images = browser.send("Runtime.evaluate", returnByValue=True, expression=(
        "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"
    ))["result"]["value"]
    text = browser.send("Runtime.evaluate", returnByValue=True,
                        expression="document.body.innerText")["result"]["value"]
    errors = [e for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    return images, text, errors


def test_report_renders_with_images_and_no_console_errors(report, browser, tmp_path):
    images, text, errors = inspect(browser, report.html_path)
    assert len(images) == len(report.figures) >= 8
    assert all(img["complete"] and img["width"] > 0 for img in images), images
    assert "Verdict" in text and report.verdict.split(" (")[0] in text
    assert errors == []
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    Path(os.environ.get("SPECFORCE_SCREENSHOT", tmp_path / "report.png")).write_bytes(png)


FIRST_SCREEN = """(() => {
  const box = el => { const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, height: r.height}; };
  const verdict = document.querySelector("section.verdict");
  return {viewport: window.innerHeight,
          sentence: box(verdict.querySelector("p")),
          table: box(verdict.querySelector("table")),
          rows: Array.from(verdict.querySelectorAll("tbody tr")).map(tr => tr.cells[0].innerText),
          forest: box(verdict.querySelector("img")),
          forestAlt: verdict.querySelector("img").alt,
          forestWidth: verdict.querySelector("img").naturalWidth,
          headings: Array.from(document.querySelectorAll("section h2")).map(h => h.innerText)};
})()"""


def test_first_screen_shows_the_verdict_table_and_forest_plot(report, browser, tmp_path):
    browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    inspect(browser, report.html_path)
    view = browser.send("Runtime.evaluate", returnByValue=True, expression=FIRST_SCREEN)["result"]["value"]
    # the sentence, the whole table and the whole forest plot fit in one 1280x900 screen, in that order
    assert view["sentence"]["top"] < view["table"]["top"] < view["forest"]["top"]
    assert view["forest"]["bottom"] <= view["viewport"] and view["forest"]["height"] > 150
    assert view["rows"] == ["8", "4", "coarse − fine: 8 vs 4"] and view["forestWidth"] > 0
    assert view["forestAlt"].startswith("Δ denoise_loss (SF − baseline) per patch size")
    assert view["headings"][:3] == ["Verdict", "Secondary metrics", "What to run next"]
    assert view["headings"][-1] == "Methods"
    shot = browser.send("Page.captureScreenshot", format="png")  # the viewport only: what a reader sees first
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    Path(os.environ.get("SPECFORCE_FIRST_SCREEN", tmp_path / "first_screen.png")).write_bytes(png)


def test_the_check_catches_a_broken_page(browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgo=">'
                      "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    images, _, errors = inspect(browser, broken)
    assert images and images[0]["width"] == 0
    kinds = {e["method"] for e in errors}
    assert {"Runtime.consoleAPICalled", "Runtime.exceptionThrown"} <= kinds
