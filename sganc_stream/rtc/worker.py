"""Model work of the live call, off the event loop: the loop that runs ICE, DTLS and SCTP only does I/O.

:class:`SendWorker` (the media source side): a capture thread reads the camera or clip and keeps only the newest
frame in a one-slot :class:`Latest` mailbox (a slow encoder gets the newest frame, never a queue of stale ones);
an encode thread takes it, runs align → E → T → quantise → rANS (and the ``--paste-back`` self view), and
hands the packet to the loop: a face packet, or a no-face packet when the aligner finds no face (so the other
side stops showing the face instead of freezing on the last one).

:class:`ReceiveWorker` (the sink side): applies every delivery in order (the decoder's integer state needs each
one: rANS and T⁻¹), renders only the newest result with G, and shows/records it. Its queue is bounded: when it
overflows, the backlog is dropped and the loop is told to ask for a keyframe, so latency cannot grow. A no-face
delivery changes no state and renders no face: ``render(None)`` gives the library's no-face picture.

Results cross to the loop with ``loop.call_soon_threadsafe``. Torch and ONNX Runtime release the GIL inside their
operators, so two threads (encode, render) share the process's cores; per-stage times (align, E, T, rANS, T⁻¹ on the
sender; rANS + T⁻¹ and G on the receiver; T and T⁻¹ timed by :class:`TimedFlows`) go into the call's log.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from sganc_stream.bitstream.packet import PacketType
from sganc_stream.errors import BitstreamError, SgancError
from sganc_stream.encoding import EncodedFrame, FrameEncoder
from sganc_stream.latent.model import FlowRunner, LatentCodecModel
from sganc_stream.rtc.transport import Delivery

T = TypeVar("T")
MAX_PENDING = 64  # deliveries waiting for the decoder before the backlog is dropped (6 s at 10 fps)


class TimedFlows:
    """A :class:`~sganc_stream.latent.model.FlowRunner` that times T and T⁻¹ per thread: :meth:`take` gives the ms
    the calling thread spent in each since its last ``take`` (the encode and receive threads share one codec)."""

    def __init__(self, inner: FlowRunner) -> None:
        self.inner = inner
        self._local = threading.local()

    @classmethod
    def install(cls, codec: LatentCodecModel) -> TimedFlows:
        """Wrap the runner ``codec`` uses for T and T⁻¹ (built now if the codec builds it lazily); once per codec."""
        if isinstance(codec.runner, TimedFlows):  # two peers of one process (tests) share a model
            return codec.runner
        timed = cls(codec._runner())  # noqa: SLF001 - the codec's one way to build its runner
        codec.runner = timed
        return timed

    def _timed(self, name: str, fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return fn(x)
        finally:
            times = self._local.__dict__.setdefault("ms", {})
            times[name] = times.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._timed("T", self.inner.forward, x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self._timed("T_inv", self.inner.inverse, y)

    def take(self) -> dict[str, float]:
        """``{"T": ms, "T_inv": ms}`` (those that ran) of this thread since its last call."""
        return self._local.__dict__.pop("ms", {})


class Latest(Generic[T]):
    """A one-slot mailbox between two threads: ``put`` replaces what waits (counted in ``dropped``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            self.dropped += self._full
            self._item, self._full = item, True
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` s; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout) or not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Encoded:
    """One coded camera frame, handed to the loop."""

    generation: int  # the stream (connection) it was coded for
    frame: EncodedFrame
    capture_time: float  # seconds, time.time() clock
    encode_start: float
    timing: dict[str, float]  # ms per stage


class SendWorker:
    """Camera → encoder in two threads (see the module doc).

    ``gate()`` is asked before each frame is coded: it returns the generation of the stream to code for, or None
    to skip the frame (no connection, hello not yet acknowledged, or the channel backed up), so skipped frames
    use no sequence number. A new generation restarts the stream (intra frame, sequence number 0).
    ``deliver(Encoded)`` and ``fail(exc)`` run on ``loop``. ``self_view(EncodedFrame, camera_frame)`` (optional)
    runs in the encode thread.
    """

    def __init__(self, frames: Iterable[tuple[np.ndarray, float]], encoder: FrameEncoder, *, fps: float,
                 max_fps: float | None, gate: Callable[[], int | None], deliver: Callable[[Encoded], None],
                 fail: Callable[[BaseException], None], loop: asyncio.AbstractEventLoop,
                 self_view: Callable[[EncodedFrame, np.ndarray], None] | None = None,
                 flows: TimedFlows | None = None) -> None:
        if max_fps is not None and max_fps <= 0:
            raise SgancError(f"--max-fps must be positive, got {max_fps}")
        self.frames, self.encoder = frames, encoder
        self.fps = min(fps, max_fps or fps)
        self.max_fps = max_fps
        self.gate, self.deliver, self.fail, self.loop, self.self_view = gate, deliver, fail, loop, self_view
        self.flows = flows
        self.latest: Latest[tuple[np.ndarray, float]] = Latest()
        self.generation: int | None = None
        self.skipped = 0  # frames not coded because the gate said no
        self._keyframe = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard, args=(f,), name=f"sganc-{f.__name__}", daemon=True)
                         for f in (self._capture, self._encode)]

    @property
    def camera_dropped(self) -> int:
        """Camera frames replaced in the mailbox before the encoder took them."""
        return self.latest.dropped

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def request_keyframe(self) -> None:
        """The next coded frame is an intra frame (thread-safe)."""
        self._keyframe.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.latest.close()
        for t in self._threads:
            t.join(timeout)

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - a dying worker must end the call with its error, not hang it
            if not self._stop.is_set():
                self.loop.call_soon_threadsafe(self.fail, exc)

    def _capture(self) -> None:
        next_slot = 0.0
        for frame, t in self.frames:
            if self._stop.is_set():
                return
            if self.max_fps and t < next_slot - 1e-3:  # --max-fps: this frame falls between two send slots
                continue
            next_slot = max(next_slot + 1 / self.fps, t + 0.5 / self.fps)
            self.latest.put((frame, t))

    def _encode(self) -> None:
        while not self._stop.is_set():
            item = self.latest.get(timeout=0.2)
            if item is None:
                continue
            frame, t = item
            generation = self.gate()
            if generation is None:
                self.skipped += 1
                continue
            if generation != self.generation:
                self.encoder.restart()
                self.generation = generation
                self._keyframe.clear()
            if self._keyframe.is_set():
                self._keyframe.clear()
                self.encoder.request_keyframe()
            started = time.time()
            encoded = self.encoder.encode(frame, t)  # a face packet, or a no-face packet (SPEC.md §8.5)
            if self.self_view is not None:
                self.self_view(encoded, frame)  # the reconstruction (T⁻¹, timed as T_inv) and G
            timing = encode_stages(self.encoder.timing, self.flows.take() if self.flows is not None else {})
            self.loop.call_soon_threadsafe(self.deliver, Encoded(generation, encoded, t, started, timing))


def state_crc(state: np.ndarray) -> int:
    """CRC-32 of a latent state's integers (int64, little-endian): the sender logs it for the state it coded, the
    receiver for the state it rendered; equal values mean the receiver decoded exactly what was coded, on any machine
    (the state is integer; SPEC.md §6)."""
    return zlib.crc32(np.ascontiguousarray(state, dtype="<i8").tobytes())


def encode_stages(timing: dict[str, float], flows: dict[str, float]) -> dict[str, float]:
    """The encoder's ms per stage (align, E, code) with ``code`` split by the T ms of ``flows`` into T and ``rans``
    (quantise and rANS); ``T_inv`` only where the frame's reconstruction was computed (the ``--paste-back`` self
    view; the sender needs no T⁻¹ otherwise); as it is without ``flows``."""
    if not flows or "code" not in timing:
        return dict(timing)
    out = {k: v for k, v in timing.items() if k != "code"}
    out["T"] = flows.get("T", 0.0)
    out["rans"] = max(timing["code"] - out["T"], 0.0)
    if "T_inv" in flows:
        out["T_inv"] = flows["T_inv"]
    return out


@dataclass
class Shown:
    """A frame the receive worker rendered and showed."""

    delivery: Delivery  # its packet is a face packet, or a no-face packet (then the no-face picture was shown)
    decode_ms: float  # rANS and T⁻¹ of this delivery's packets
    t_inv_ms: float | None  # T⁻¹ alone (None: not timed)
    render_ms: float  # G
    state_crc: int | None  # :func:`state_crc` of the latent state rendered (None: the no-face picture)
    shown_at: float  # time.time()
    waiting: int  # deliveries that were still queued (0: it was the newest)


class LatentDecoder(Protocol):
    """What the receive worker needs of the latent codec's stream decoder (``LatentStreamDecoder``)."""

    def decode(self, ptype: PacketType, payload: bytes) -> np.ndarray: ...

    def reset(self) -> None: ...

    @property
    def state(self) -> np.ndarray | None: ...


@dataclass
class _Stream:
    generation: int
    make_decoder: Callable[[], LatentDecoder]  # called in the worker thread (building tables can take a while)
    decoder: LatentDecoder | None = None
    failed_sync: int | None = None


@dataclass
class _Poison:
    """Deliveries of ``generation`` with ``sync_id`` chain on a state that lost packets: skip them."""

    generation: int
    sync_id: int


class ReceiveWorker:
    """Deliveries → latents → the newest frame rendered and shown, in one thread (see the module doc).

    ``render(latents) -> image`` is G, ``render(None)`` the no-face picture; ``show(image, delivery)`` displays and
    records (both in the worker);
    ``shown(Shown)``, ``undecodable(generation, sync_id, why)`` and ``overrun(generation, sync_id)`` run on ``loop``.
    """

    def __init__(self, render: Callable[[np.ndarray | None], np.ndarray],
                 show: Callable[[np.ndarray, Delivery], None], *,
                 shown: Callable[[Shown], None], undecodable: Callable[[int, int, str], None],
                 overrun: Callable[[int, int], None], fail: Callable[[BaseException], None],
                 loop: asyncio.AbstractEventLoop, max_pending: int = MAX_PENDING,
                 flows: TimedFlows | None = None) -> None:
        self.render, self.show, self.flows = render, show, flows
        self.shown, self.undecodable, self.overrun, self.fail, self.loop = shown, undecodable, overrun, fail, loop
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._jobs: deque[tuple[int, Delivery] | _Stream | _Poison] = deque()
        self._stop = False
        self.dropped = 0  # deliveries dropped by overruns
        self.superseded = 0  # deliveries decoded but not shown: a newer one was ready before G was free
        self._thread = threading.Thread(target=self._guarded, name="sganc-receive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def new_stream(self, generation: int, make_decoder: Callable[[], LatentDecoder]) -> None:
        """Deliveries of ``generation`` decode with the decoder ``make_decoder()`` builds (in the worker)."""
        with self._cond:
            self._jobs.append(_Stream(generation, make_decoder))
            self._cond.notify()

    def submit(self, generation: int, delivery: Delivery) -> None:
        """Queue a delivery (event loop). When ``max_pending`` already wait, they and this one are dropped, later
        deliveries that chain on them are skipped, and ``overrun(generation, sync_id)`` is called soon."""
        with self._cond:
            pending = [j for j in self._jobs if isinstance(j, tuple)]
            if len(pending) >= self.max_pending:
                self.dropped += len(pending) + 1
                self._jobs = deque(j for j in self._jobs if not isinstance(j, tuple))
                self._jobs.append(_Poison(generation, delivery.sync_id))
                self.loop.call_soon(self.overrun, generation, delivery.sync_id)
            else:
                self._jobs.append((generation, delivery))
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _next(self) -> Iterator[tuple[int, Delivery] | _Stream | _Poison | None]:
        """Jobs in order; None when the queue has just run dry (time to render)."""
        while True:
            with self._cond:
                empty = not self._jobs
            if empty:
                yield None  # never while holding the lock: submit() runs on the event loop
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stop)
                if self._stop:
                    return
                job = self._jobs.popleft()
            yield job

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - as SendWorker._guard
            self.loop.call_soon_threadsafe(self.fail, exc)

    def _run(self) -> None:
        stream: _Stream | None = None
        newest: tuple[np.ndarray | None, int | None, Delivery, float, float | None] | None = None
        for job in self._next():
            if job is None:
                if newest is not None:
                    latents, crc, delivery, decode_ms, t_inv_ms = newest
                    newest = None
                    started = time.perf_counter()
                    image = self.render(latents)
                    render_ms = (time.perf_counter() - started) * 1000
                    self.show(image, delivery)
                    with self._cond:
                        waiting = len(self._jobs)
                    self.loop.call_soon_threadsafe(self.shown, Shown(delivery, decode_ms, t_inv_ms, render_ms, crc,
                                                                     time.time(), waiting))
                continue
            if isinstance(job, _Stream):
                stream, newest = job, None
                stream.decoder = job.make_decoder()
                continue
            if isinstance(job, _Poison):
                if stream is not None and stream.decoder is not None and job.generation == stream.generation:
                    stream.decoder.reset()
                    stream.failed_sync, newest = job.sync_id, None
                continue
            generation, delivery = job
            if stream is None or stream.decoder is None or generation != stream.generation:
                continue  # another connection's
            if delivery.packet.type == PacketType.NO_FACE:  # no state to apply, nothing chained on one
                self.superseded += newest is not None
                newest = (None, None, delivery, 0.0, None)
                continue
            if stream.failed_sync == delivery.sync_id:
                continue  # chained on a state that already failed
            started = time.perf_counter()
            if self.flows is not None:
                self.flows.take()  # T⁻¹ of this delivery only
            try:
                for ptype, payload in delivery.steps:
                    latents = stream.decoder.decode(ptype, payload)
            except BitstreamError as exc:
                stream.decoder.reset()
                stream.failed_sync, newest = delivery.sync_id, None
                self.loop.call_soon_threadsafe(self.undecodable, generation, delivery.sync_id, str(exc))
                continue
            self.superseded += newest is not None
            t_inv = self.flows.take().get("T_inv") if self.flows is not None else None
            newest = (latents, state_crc(stream.decoder.state), delivery, (time.perf_counter() - started) * 1000,
                      t_inv)
