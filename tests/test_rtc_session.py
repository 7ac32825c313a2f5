"""Headless calls between two processes on 127.0.0.1 (micro model, synthetic clip as both cameras, 10 fps).

Figures are compared with what the other side logs as sent (not with the nominal rate): this machine's CPU is
shared, so a starved sender may send fewer frames, but what it sends must arrive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_data import clip, micro_model, other_model
from sganc_stream.video import read_frames

pytestmark = pytest.mark.slow

LAUNCH = "import sys; from sganc_stream.rtc.{0} import {1}; sys.exit({1}())"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SGANC_RTC_LOOPBACK": "1"}


def spawn(main: str, *args: str | Path, stdin: bool = False) -> subprocess.Popen[str]:
    """Run a console script's function (``call_main``, ``signal_main``) as ``sganc-...`` would."""
    module = "signaling" if main == "signal_main" else "cli"
    return subprocess.Popen([sys.executable, "-c", LAUNCH.format(module, main), *map(str, args)], env=ENV, text=True,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def signal_url() -> Iterator[str]:
    proc = spawn("signal_main", "--port", "0", "--duration", "240")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line + proc.stderr.read() if proc.stderr else line
    yield line.split()[-1]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


def call(url: str, room: str, name: str, tmp: Path, duration: float, *extra: str | Path, model: Path | None = None
         ) -> subprocess.Popen[str]:
    return spawn("call_main", "--signal", url, "--room", room, "--token", "t", "--video", clip(), "--pre-aligned",
                 "--model", model or micro_model(), "--headless", "--duration", str(duration), "--log",
                 tmp / f"{name}.jsonl", "--name", name, *extra)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"peer did not stop by itself: {err}")
    return proc.returncode, err


def events(log: Path, ev: str) -> list[dict]:
    if not log.exists():
        return []
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["ev"] == ev]


def wait_for(log: Path, ev: str, count: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while len(events(log, ev)) < count:
        if time.time() > end:
            pytest.fail(f"{log.name}: fewer than {count} {ev!r} events after {timeout} s")
        time.sleep(0.2)


def test_call_both_sides_receive_and_record(signal_url: str, tmp_path: Path) -> None:
    clip(), micro_model()  # build fixtures before timing anything
    a = call(signal_url, "call", "A", tmp_path, 8, "--record", tmp_path / "A.mp4")
    b = call(signal_url, "call", "B", tmp_path, 8, "--record", tmp_path / "B.mp4")
    assert finish(a)[0] == 0 and finish(b)[0] == 0
    for me, other in (("A", "B"), ("B", "A")):
        sent = events(tmp_path / f"{other}.jsonl", "tx")
        got = events(tmp_path / f"{me}.jsonl", "rx")
        assert len(sent) >= 20
        assert len(got) >= 0.9 * len(sent), (me, len(got), len(sent))
        shown = events(tmp_path / f"{me}.jsonl", "display")
        assert len(read_frames(tmp_path / f"{me}.mp4")) == len(shown) >= 0.9 * len(got)
        assert all(d["latency_ms"] > 0 for d in shown)
        stats = events(tmp_path / f"{me}.jsonl", "stats")
        assert max(s["rx_wire_kbps"] for s in stats) > max(s["rx_payload_kbps"] for s in stats) > 0


def test_injected_loss_is_recovered_by_keyframes(signal_url: str, tmp_path: Path) -> None:
    a = call(signal_url, "lossy", "A", tmp_path, 6)
    b = call(signal_url, "lossy", "B", tmp_path, 6, "--loss", "0.2", "--seed", "1")
    assert finish(a)[0] == 0 and finish(b)[0] == 0
    log = tmp_path / "B.jsonl"
    gaps, syncs = events(log, "gap"), events(log, "sync")
    assert gaps and len(syncs) >= len(gaps) - 1  # the last loss may fall at the very end of the call
    assert all(s["recovery_ms"] < 1500 for s in syncs)
    assert events(log, "keyframe_request")
    intra = [r for r in events(tmp_path / "A.jsonl", "tx") if r["type"] == "intra"]
    assert len(intra) >= len(syncs)  # every resync was served by an intra frame
    assert len(events(log, "rx")) >= 0.4 * len(events(tmp_path / "A.jsonl", "tx"))


def test_peer_killed_and_back(signal_url: str, tmp_path: Path) -> None:
    a = call(signal_url, "rejoin", "A", tmp_path, 40, "--record", tmp_path / "A.mp4")
    b1 = call(signal_url, "rejoin", "B1", tmp_path, 40)
    wait_for(tmp_path / "A.jsonl", "rx", 10)
    b1.kill()
    b1.communicate()
    wait_for(tmp_path / "A.jsonl", "left", 1, timeout=20)
    first = len(events(tmp_path / "A.jsonl", "rx"))
    b2 = call(signal_url, "rejoin", "B2", tmp_path, 5)
    assert finish(b2)[0] == 0
    a.send_signal(signal.SIGINT)  # A has seen both; stop it early
    code, _ = finish(a)
    assert code in (0, 130)
    log = tmp_path / "A.jsonl"
    assert len(events(log, "hello")) == 2
    assert len(events(log, "rx")) >= first + 10  # frames from the second B
    assert len(events(tmp_path / "B2.jsonl", "rx")) >= 10  # A kept sending and B2 decoded it
    assert a.poll() is not None


def test_model_mismatch_is_refused_on_both_sides(signal_url: str, tmp_path: Path) -> None:
    a = call(signal_url, "mismatch", "A", tmp_path, 20, "--quiet")
    b = call(signal_url, "mismatch", "B", tmp_path, 20, "--quiet", model=other_model())
    for proc in (a, b):
        code, err = finish(proc)
        assert code == 2, err
        assert "model mismatch" in err and len(err.strip().splitlines()) == 1, err


class FakeLink:
    """What Peer._transmit uses of a Link: the stream's fps, the peer's message limit, and send."""

    def __init__(self, limit: int) -> None:
        self.fps, self.limit, self.sent = 10.0, limit, []

    def max_message_size(self) -> int:
        return self.limit

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_packet_above_the_peers_message_limit_is_refused_cleanly(tmp_path: Path) -> None:
    """A packet larger than the other side's SDP max-message-size is never handed to aiortc (which would raise)."""
    import io

    from sganc_stream.bitstream.packet import Packet, PacketType
    from sganc_stream.pipeline import load_face_model
    from sganc_stream.rtc.session import Peer, PeerOptions

    err = io.StringIO()
    peer = Peer(load_face_model(micro_model()), PeerOptions(send=False, headless=True, log=tmp_path / "p.jsonl"), err)
    link = FakeLink(limit=1000)
    small, big = Packet(PacketType.INTRA, 0, 0, 0, b"x" * 900), Packet(PacketType.INTRA, 1, 1, 100, b"x" * 50_000)
    assert peer._transmit(link, small) and len(link.sent) == 1  # type: ignore[arg-type]
    assert not peer._transmit(link, big) and not peer._transmit(link, big)  # type: ignore[arg-type]
    assert len(link.sent) == 1 and peer.stats.total["tx_oversize"] == 2 and peer.stats.total["tx_frames"] == 1
    assert err.getvalue().count("exceeds the other side's max message size (1000 bytes): not sent") == 1
    peer.stats.close()
    logged = events(tmp_path / "p.jsonl", "oversize")
    assert [(e["seq"], e["limit"]) for e in logged] == [(1, 1000), (1, 1000)] and logged[0]["bytes"] > 50_000
    assert peer.summary()["tx_oversize"] == 2
