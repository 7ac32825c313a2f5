"""A browser as the other peer: headless Chromium runs ``tests/browser_peer.html`` (plain JavaScript written from
SPEC.md §3 and §8 alone), joins a room through ``sganc-signal`` with an ``sganc-send`` process, and checks what it
receives: the hello exchange, every packet's sequence number, frame index, timestamp and redundancy, and that a
keyframe request it sends is answered by an intra frame. Skipped where Chromium is not installed
(``apt-get install chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from queue import Empty, Queue
from urllib.parse import urlencode

import pytest

from rtc_data import clip, micro_model
from sganc_stream.pipeline import load_face_model
from test_rtc_session import events, finish, signal_url, spawn, wait_for  # noqa: F401 - signal_url is a fixture

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
PAGE = Path(__file__).with_name("browser_peer.html")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")]


@pytest.fixture
def page_server() -> Iterator[tuple[str, Queue]]:
    """Serves the page at ``/`` and takes its JSON report at ``/result`` (the report lands in the queue)."""
    reports: Queue = Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            reports.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", reports
    server.shutdown()
    server.server_close()


def test_a_browser_receives_a_well_formed_stream_and_gets_its_keyframe(signal_url: str, tmp_path: Path,
                                                                       page_server: tuple[str, Queue]) -> None:
    base, reports = page_server
    sender = spawn("send_main", "--signal", signal_url, "--room", "browser", "--token", "t", "--video", clip(),
                   "--pre-aligned", "--model", micro_model(), "--headless", "--duration", "60", "--log",
                   tmp_path / "S.jsonl", "--name", "S")
    browser = None
    try:
        wait_for(tmp_path / "S.jsonl", "joined", 1)  # the sender is in the room: it makes the offer
        query = urlencode({"signal": signal_url, "room": "browser", "token": "t", "frames": 15,
                           "model": load_face_model(micro_model()).model_id, "report": f"{base}/result"})
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={tmp_path / 'chromium'}", "--allow-loopback-in-peer-connection",
             "--disable-features=WebRtcHideLocalIpsWithMdns", f"{base}/?{query}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            report = reports.get(timeout=90)
        except Empty:
            pytest.fail("the browser peer sent no report within 90 s")
    finally:
        if browser is not None:
            os.killpg(browser.pid, signal.SIGTERM)  # Chromium's own process group (start_new_session)
            browser.wait(timeout=20)
        sender.send_signal(signal.SIGINT)
        finish(sender)
    (tmp_path / "browser_report.json").write_text(json.dumps(report, indent=1))  # kept for a failure's post-mortem
    assert report["errors"] == [] and report["ok"], report["log"]
    assert report["helloAcked"] and report["theirHello"]["fps"] > 0
    frames = report["frames"]
    assert len(frames) >= 16 and frames[0]["seq"] == 0 and frames[0]["type"] == 0  # the stream starts intra, seq 0
    assert report["gaps"] <= 1 and report["late"] <= 1  # loopback: nothing (or next to nothing) lost
    assert report["redundantChecked"] >= 5  # redundant copies matched the packets they repeat, byte for byte
    answer = report["answer"]
    assert answer["seq"] >= report["requestSeq"] and answer["after"] <= 5  # the request was answered, promptly
    assert all(-50 <= ms <= 10_000 for ms in report["latencyMs"])  # epoch_ms + timestamps: real capture times
    sent_intra = [t for t in events(tmp_path / "S.jsonl", "tx") if t["type"] == "intra"]
    assert len(sent_intra) >= 2  # the first frame and the answer to the browser's request
