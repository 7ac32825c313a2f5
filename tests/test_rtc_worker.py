"""The call's worker threads: newest-frame mailbox, encode gating and stream restarts, in-order decoding with only
the newest frame rendered, decode failures and overruns reported to the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.errors import BitstreamError
from sganc_stream.rtc.transport import Delivery
from sganc_stream.rtc.worker import Latest, ReceiveWorker, SendWorker, Shown, state_crc

I, P = PacketType.INTRA, PacketType.INTER


async def until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for ``condition()`` (this machine's CPU is shared: never rely on a fixed sleep alone)."""
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


def test_latest_keeps_only_the_newest_item() -> None:
    box: Latest[int] = Latest()
    assert box.get(timeout=0.01) is None
    for i in range(5):
        box.put(i)
    assert box.get() == 4 and box.dropped == 4
    threading.Timer(0.05, box.put, (9,)).start()
    assert box.get(timeout=5) == 9
    box.close()
    assert box.get() is None


class FakeEncoder:
    """Counts restarts and keyframe requests; codes every frame as one packet (frame value = payload)."""

    def __init__(self) -> None:
        self.restarts = 0
        self.keyframes = 0
        self.seq = 0
        self.timing = {"align": 1.0, "E": 2.0, "code": 3.0}

    def restart(self) -> None:
        self.restarts += 1
        self.seq = 0

    def request_keyframe(self) -> None:
        self.keyframes += 1

    def encode(self, frame: np.ndarray, t: float) -> SimpleNamespace:
        packet = Packet(I if self.seq == 0 else P, self.seq, self.seq, 0, bytes([int(frame[0])]))
        self.seq += 1
        return SimpleNamespace(packet=packet, has_face=True)


def frames(n: int, interval: float) -> Iterator[tuple[np.ndarray, float]]:
    for i in range(n):
        time.sleep(interval)
        yield np.array([i]), time.time()


def test_send_worker_gates_restarts_and_forwards_keyframe_requests() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        got: list = []
        generation: list[int | None] = [None]
        enc = FakeEncoder()
        worker = SendWorker(frames(400, 0.02), enc, fps=50.0, max_fps=None,  # type: ignore[arg-type]
                            gate=lambda: generation[0], deliver=got.append, fail=lambda e: got.append(e), loop=loop)
        worker.start()
        await until(lambda: worker.skipped >= 3)
        assert got == []  # no connection yet: frames are skipped, not coded
        generation[0] = 1
        await until(lambda: len(got) >= 3)
        worker.request_keyframe()
        await until(lambda: enc.keyframes == 1)
        generation[0] = 2
        await until(lambda: sum(g.generation == 2 for g in got) >= 3)
        await asyncio.to_thread(worker.stop)
        assert all(g.generation in (1, 2) for g in got)
        assert enc.restarts == 2 and enc.keyframes == 1
        for gen in (1, 2):
            seqs = [g.frame.packet.seq for g in got if g.generation == gen]
            assert seqs == list(range(len(seqs))) and seqs  # each connection's stream starts at 0, no holes
        assert got[0].timing == enc.timing

    asyncio.run(body())


def test_send_worker_respects_max_fps() -> None:
    async def body() -> None:
        got: list = []
        worker = SendWorker(frames(150, 0.01), FakeEncoder(), fps=100.0, max_fps=20.0,  # type: ignore[arg-type]
                            gate=lambda: 1, deliver=got.append, fail=got.append, loop=asyncio.get_running_loop())
        worker.start()
        await until(lambda: len(got) >= 12)
        await asyncio.to_thread(worker.stop)
        times = [g.capture_time for g in got]
        # 20 fps from a 100 fps camera. Send slots keep a 50 ms grid (so a 30 fps camera gives 20 fps, not 15); the
        # first frame, and the first after a stalled camera frame, restart it half a period (25 ms, less the 1 ms
        # tolerance) later: no two frames closer than that, and about 20 per second (this CPU is shared: stalls)
        assert min(np.diff(times)) >= 0.024
        assert (len(times) - 1) / (times[-1] - times[0]) <= 20.0 * 1.2

    asyncio.run(body())


class FakeDecoder:
    def __init__(self, fail_on: bytes = b"bad") -> None:
        self.applied: list[bytes] = []
        self.resets = 0
        self.fail_on = fail_on

    def decode(self, ptype: PacketType, payload: bytes) -> np.ndarray:
        if payload == self.fail_on:
            raise BitstreamError("corrupt")
        self.applied.append(payload)
        return np.array([len(self.applied)])

    def reset(self) -> None:
        self.resets += 1

    @property
    def state(self) -> np.ndarray:
        return np.array([len(self.applied)], dtype=np.int64)


def delivery(seq: int, payloads: list[bytes], sync_id: int = 1) -> Delivery:
    return Delivery([(P, p) for p in payloads], Packet(P, seq, seq, 0, payloads[-1]), 0.0, 10, len(payloads) - 1,
                    None, sync_id)


def test_receive_worker_applies_every_delivery_and_renders_the_newest() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        shown: list[Shown] = []
        failures: list[tuple] = []
        dec = FakeDecoder()
        gate = threading.Event()

        def render(latents: np.ndarray) -> np.ndarray:
            gate.wait(5)  # hold the first render so that deliveries pile up behind it
            return latents

        worker = ReceiveWorker(render, lambda image, d: None, shown=shown.append,
                               undecodable=lambda *a: failures.append(a), overrun=lambda *a: failures.append(a),
                               fail=failures.append, loop=loop)
        worker.start()
        worker.new_stream(1, lambda: dec)
        worker.submit(1, delivery(0, [b"a"]))
        await until(lambda: dec.applied == [b"a"])
        for seq, payloads in [(2, [b"b", b"c"]), (3, [b"d"]), (4, [b"e"])]:
            worker.submit(1, delivery(seq, payloads))
        worker.submit(2, delivery(9, [b"other connection"]))
        gate.set()
        await until(lambda: len(shown) == 2)
        assert dec.applied == [b"a", b"b", b"c", b"d", b"e"]  # every packet's state, in order
        assert [s.delivery.packet.seq for s in shown] == [0, 4]  # rendered: the first, then only the newest
        assert [s.state_crc for s in shown] == [state_crc(np.array([n])) for n in (1, 5)]  # the states rendered
        assert worker.superseded == 2  # 2 and 3: decoded, not shown
        worker.submit(1, delivery(5, [b"bad"], sync_id=1))
        worker.submit(1, delivery(6, [b"f"], sync_id=1))  # chained on the failed state: skipped
        worker.submit(1, delivery(7, [b"g"], sync_id=2))  # after a resync: applied
        await until(lambda: dec.applied[-1] == b"g")
        await asyncio.to_thread(worker.stop)
        assert failures == [(1, 1, "corrupt")] and dec.resets == 1
        assert dec.applied[-1] == b"g" and b"f" not in dec.applied

    asyncio.run(body())


def test_receive_worker_overrun_drops_the_backlog_and_reports_it() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        overruns: list[tuple] = []
        dec = FakeDecoder()
        hold = threading.Event()
        worker = ReceiveWorker(lambda x: (hold.wait(5), x)[1], lambda image, d: None, shown=lambda s: None,
                               undecodable=lambda *a: None, overrun=lambda *a: overruns.append(a), fail=print,
                               loop=loop, max_pending=3)
        worker.start()
        worker.new_stream(1, lambda: dec)
        worker.submit(1, delivery(0, [b"a"]))
        await until(lambda: dec.applied == [b"a"])  # the worker now renders, held
        for seq in range(1, 5):
            worker.submit(1, delivery(seq, [bytes([seq])]))
        await until(lambda: bool(overruns))
        assert overruns == [(1, 1)] and worker.dropped == 4
        worker.submit(1, delivery(5, [b"late, same sync"]))
        worker.submit(1, delivery(6, [b"after resync"], sync_id=2))
        hold.set()
        await until(lambda: len(dec.applied) == 2)
        await asyncio.to_thread(worker.stop)
        assert dec.applied == [b"a", b"after resync"] and dec.resets == 1

    asyncio.run(body())


def test_receive_worker_shows_no_face_without_touching_the_state() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        shown: list[Shown] = []
        rendered: list[np.ndarray | None] = []
        dec = FakeDecoder()

        def render(latents: np.ndarray | None) -> np.ndarray:
            rendered.append(latents)
            return np.zeros(1) if latents is None else latents

        worker = ReceiveWorker(render, lambda image, d: None, shown=shown.append, undecodable=lambda *a: None,
                               overrun=lambda *a: None, fail=print, loop=loop)
        worker.start()
        worker.new_stream(1, lambda: dec)
        no_face = Delivery([], Packet(PacketType.NO_FACE, 1, 1, 0), 0.0, 5, 0, None, 1)
        after_failure = replace(no_face, packet=replace(no_face.packet, frame=3))
        steps = [(delivery(0, [b"a"]), lambda: len(shown) == 1), (no_face, lambda: len(shown) == 2),
                 (delivery(1, [b"bad"]), lambda: dec.resets == 1), (after_failure, lambda: len(shown) == 3),
                 (delivery(2, [b"b"], sync_id=2), lambda: len(shown) == 4)]
        for d, done in steps:  # one at a time, so that each is the newest when the worker renders
            worker.submit(1, d)
            await until(done)
        await asyncio.to_thread(worker.stop)
        kinds = [s.delivery.packet.type for s in shown]
        assert kinds == [P, PacketType.NO_FACE, PacketType.NO_FACE, P]  # the failed face frame is not shown
        assert rendered[1] is None and rendered[2] is None  # the no-face picture, never the last face
        assert dec.applied == [b"a", b"b"] and dec.resets == 1  # no-face deliveries left the state alone

    asyncio.run(body())
