"""One peer of a live call: sends its camera's face, receives and shows the other's (either or both).

A :class:`Peer` outlives its connections: the camera, the renderer and the recording keep running while the
other side leaves and rejoins; each connection (:class:`Link`) is one RTCPeerConnection with one data channel
and, per direction, a fresh stream (new FrameEncoder, so the first packet is an intra frame; new decoder for the
other side's stream header). Encoding and rendering run in worker threads so the event loop that runs ICE,
DTLS and SCTP never stalls; latents are decoded for every packet on arrival (cheap, and the state needs every
packet) while only the newest decoded frame is rendered, so a slow generator lowers the displayed frame rate
instead of adding latency.

Stats go to a JSON-lines log (``--log``): one line per sent frame (``tx``), decoded frame (``rx``), displayed
frame (``display`` with capture-to-display latency), loss event (``gap``, ``sync`` with the recovery time),
connection event, and a ``stats`` summary every second (rates in kbps over the last second: payload = packet
bytes, channel = with SCTP DATA chunk framing, wire = estimated IP packets; see ``transport``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError

from sganc_stream.bitstream.packet import Packet, PacketType, pack
from sganc_stream.errors import BitstreamError, InputError, ModelMismatchError, SgancError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.face.paste_back import PasteBack
from sganc_stream.pipeline import NO_FACE_PIXEL, EncodedFrame, FaceModel, FrameDecoder, FrameEncoder
from sganc_stream.rtc.media import FrameSink, open_source, require_display
from sganc_stream.rtc.signaling import (SignalingClient, SignalingError, description_from_line, description_to_line,
                                        read_line, remote_description)
from sganc_stream.rtc.transport import (CHANNEL_LABEL, CHANNEL_OPTIONS, DEFAULT_MAX_BUFFERED,
                                        DEFAULT_PEER_MAX_MESSAGE, NO_FACE_REPEAT_S, Hello, LossInjector,
                                        MessageTooLarge, Pacer, Received, RefusedError, StreamReceiver,
                                        check_message_size, check_models, chunk_bytes, parse_message, peer_max_message,
                                        refusal, restamp, wire_bytes)


@dataclass
class PeerOptions:
    """What one side of a call does; defaults are a two-way call."""

    send: bool = True
    receive: bool = True
    video: Path | None = None  # a clip as the camera (looped, paced in real time)
    camera: str | None = None  # an OpenCV capture device
    camera_fps: float | None = None
    max_fps: float | None = None  # send at most this rate (camera frames in between are skipped)
    align: bool = True  # False: the source already shows aligned faces
    landmarks: str = "dlib"
    params: StreamParams = field(default_factory=StreamParams)
    record: Path | None = None
    paste_back: bool = False  # self view: the full camera frame with this side's decoded face pasted back
    self_record: Path | None = None  # record that self view
    headless: bool = False
    duration: float | None = None  # seconds; None: until interrupted or the other side refuses
    loss: float = 0.0  # probability of dropping each incoming packet (testing / benchmarks)
    seed: int = 0
    log: Path | None = None
    ice_servers: list[str] = field(default_factory=list)
    max_buffered: int = DEFAULT_MAX_BUFFERED
    name: str = "peer"
    quiet: bool = False


class StatsLog:
    """Counters, one-second windows and the JSON-lines log."""

    def __init__(self, path: Path | None, name: str, err: TextIO, quiet: bool) -> None:
        self.name, self.err, self.quiet = name, err, quiet
        self.file = path.open("w", buffering=1) if path is not None else None
        self.total: dict[str, float] = {}
        self.window: dict[str, float] = {}
        self.latencies: list[float] = []
        self.window_start = time.time()
        self.frame_type = "-"

    def add(self, **counts: float) -> None:
        for k, v in counts.items():
            self.total[k] = self.total.get(k, 0) + v
            self.window[k] = self.window.get(k, 0) + v

    def event(self, ev: str, **fields: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"t": round(time.time(), 4), "peer": self.name, "ev": ev, **fields}) + "\n")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.name}: {text}", file=self.err, flush=True)

    def tick(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Close the current window: log and return its rates."""
        now = time.time()
        span = max(now - self.window_start, 1e-6)
        w = self.window
        kbps = {f"{d}_{k}_kbps": round(w.get(f"{d}_{k}", 0) * 8 / span / 1000, 3)
                for d in ("tx", "rx") for k in ("payload", "channel", "wire")}
        rec = {**kbps, "tx_fps": round(w.get("tx_frames", 0) / span, 2), "rx_fps": round(w.get("rx_frames", 0) / span, 2),
               "display_fps": round(w.get("displayed", 0) / span, 2),
               "latency_ms": round(statistics.median(self.latencies), 1) if self.latencies else None, **extra,
               "totals": {k: int(v) for k, v in self.total.items()}}
        self.event("stats", **rec)
        self.window, self.latencies, self.window_start = {}, [], now
        return rec

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Link:
    """One connection to the other side: a peer connection, its data channel, and the two streams' state."""

    def __init__(self, ice_servers: list[str]) -> None:
        config = RTCConfiguration([RTCIceServer(u) for u in ice_servers]) if ice_servers else RTCConfiguration()
        self.pc = RTCPeerConnection(config)
        self.channel = self.pc.createDataChannel(CHANNEL_LABEL, **CHANNEL_OPTIONS)
        self.encoder: FrameEncoder | None = None
        self.epoch_ms = 0
        self.fps = 0.0
        self.frame = -1  # frame index of the last packet sent
        self.remote: Hello | None = None
        self.receiver: StreamReceiver | None = None
        self.closed = asyncio.Event()
        self.no_face_sent_ms: float | None = None  # when the last no-face packet went out (None: a face since)

    def max_message_size(self) -> int:
        """The largest message the other side accepts (its SDP's max-message-size; 0 = no limit)."""
        desc = self.pc.remoteDescription
        return DEFAULT_PEER_MAX_MESSAGE if desc is None else peer_max_message(desc.sdp)

    @property
    def open(self) -> bool:
        return self.channel.readyState == "open" and not self.closed.is_set()

    async def offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    async def accept(self, answer: RTCSessionDescription) -> None:
        await self.pc.setRemoteDescription(answer)

    def send(self, data: bytes) -> None:
        if self.open:
            self.channel.send(data)

    async def close(self) -> None:
        self.closed.set()
        await self.pc.close()


class Peer:
    """A call participant: camera → FrameEncoder → channel, and channel → FrameDecoder → window/recording."""

    def __init__(self, model: FaceModel, options: PeerOptions, err: TextIO = sys.stderr) -> None:
        if not (options.send or options.receive):
            raise SgancError("a peer must send, receive, or both")
        self.model, self.opt = model, options
        if options.receive or options.paste_back:
            require_display(options.headless)
        if options.self_record is not None and not options.paste_back:
            raise InputError("--self-record records the --paste-back self view: pass --paste-back too")
        self.source = open_source(options.video, options.camera, options.camera_fps) if options.send else None
        self.stats = StatsLog(options.log, options.name, err, options.quiet)
        self.loss = LossInjector(options.loss, options.seed)
        self.pacer = Pacer(options.max_buffered)
        self.link: Link | None = None
        self.sink: FrameSink | None = None
        self.self_view: FrameSink | None = None
        self.paster = PasteBack(model.size) if options.paste_back else None
        self.fatal: asyncio.Future[str] | None = None
        self._pending: Received | None = None
        self._new_frame = asyncio.Event()
        self._deadline = float("inf")
        self.latencies: list[float] = []
        self._last_stats: dict[str, Any] = {}
        self._stopping = False
        self.send_fps = 0.0
        if self.source is not None:
            if options.max_fps is not None and options.max_fps <= 0:
                raise SgancError(f"--max-fps must be positive, got {options.max_fps}")
            self.send_fps = min(self.source.fps, options.max_fps or self.source.fps)

    # -- links -----------------------------------------------------------------------------------

    def _new_link(self) -> Link:
        link = Link(self.opt.ice_servers)
        link.channel.on("open", lambda: self._on_open(link))
        link.channel.on("message", lambda data: self._on_message(link, data))
        link.channel.on("close", lambda: self._on_lost(link, "channel closed"))

        @link.pc.on("connectionstatechange")
        def _state() -> None:
            if link.pc.connectionState in ("failed", "closed"):
                self._on_lost(link, f"connection {link.pc.connectionState}")

        self.link = link
        return link

    async def _drop_link(self, why: str) -> None:
        link, self.link = self.link, None
        if link is not None:
            if link.encoder is not None and link.open:
                link.send(pack(Packet(PacketType.END, link.encoder.frames_coded, 0, 0), link.fps))
            self.stats.event("left", reason=why)
            await link.close()

    def _on_open(self, link: Link) -> None:
        stream = None
        if self.opt.send:
            assert self.source is not None
            link.encoder = FrameEncoder(self.model, self.opt.params, fps=self.send_fps, align=self.opt.align,
                                        landmarks=self.opt.landmarks)
            link.fps = self.send_fps
            stream = link.encoder.header(0)
        link.epoch_ms = round(time.time() * 1000)
        link.send(Hello(self.model.model_id, stream, link.epoch_ms).to_bytes())
        self.stats.event("open")

    def _on_lost(self, link: Link, why: str) -> None:
        if link is self.link and not link.closed.is_set():
            self.stats.say(f"connection lost ({why}); waiting for the other side")
            link.closed.set()
            asyncio.ensure_future(self._drop_link(why))

    def _fail(self, message: str) -> None:
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(message)

    def _on_message(self, link: Link, data: bytes | str) -> None:
        if link is not self.link:
            return
        is_packet = isinstance(data, bytes) and not (data[:1] and 0x80 <= data[0] <= 0x8F)
        if is_packet and self.loss.drop():
            return
        receiver = link.receiver
        try:
            msg = parse_message(data, None if receiver is None else receiver.reader)  # type: ignore[arg-type]
        except RefusedError as exc:
            self._fail(str(exc))
            return
        except BitstreamError:
            self.stats.add(rx_malformed=1)
            if receiver is not None:
                receiver.on_undecodable()
                self._maybe_request(link, receiver)
            return
        if isinstance(msg, Hello):
            self._on_hello(link, msg)
        elif msg.type == PacketType.KEYFRAME_REQUEST:
            if link.encoder is not None:
                link.encoder.request_keyframe()
                self.stats.add(keyframe_requests_received=1)
        elif receiver is not None:
            self._on_packet(link, receiver, msg, len(data))

    def _on_hello(self, link: Link, hello: Hello) -> None:
        try:
            check_models(self.model.model_id, hello.model_id)
            receiver = None
            if hello.stream is not None and self.opt.receive:
                decoder = FrameDecoder.for_header(self.model, hello.stream)
                receiver = StreamReceiver(hello, decoder)
        except ModelMismatchError as exc:
            link.send(refusal(str(exc)))
            self._fail(str(exc))
            return
        link.remote, link.receiver = hello, receiver
        self.stats.event("hello", model_id=hello.model_id, sends=hello.stream is not None,
                         fps=None if hello.stream is None else hello.stream.fps)
        self.stats.say("connected" + ("" if hello.stream is None else f"; receiving {hello.stream.fps:g} fps"))

    def _maybe_request(self, link: Link, receiver: StreamReceiver) -> None:
        if receiver.want_keyframe():
            link.send(receiver.keyframe_request())
            self.stats.add(keyframe_requests_sent=1)
            self.stats.event("keyframe_request", expected=receiver.expected)

    def _on_packet(self, link: Link, receiver: StreamReceiver, packet: Packet, size: int) -> None:
        was_synced = receiver.synced
        got = receiver.on_packet(packet, size)
        if was_synced and not receiver.synced:
            self.stats.event("gap", seq=packet.seq, expected=receiver.expected)
        if got is not None:
            if packet.type == PacketType.NEW_FACE:
                self.stats.event("identity_change", seq=packet.seq, frame=packet.frame)
            self.stats.add(rx_frames=1, rx_payload=size, rx_channel=chunk_bytes(size), rx_wire=wire_bytes(size))
            self.stats.event("rx", seq=packet.seq, frame=packet.frame, type=packet.type.label, bytes=size,
                             capture_ms=round(got.capture_ms, 1))
            if got.recovered_ms is not None:
                self.stats.event("sync", seq=packet.seq, recovery_ms=round(got.recovered_ms, 1))
            if self._pending is not None:
                self.stats.add(render_skipped=1)
            self._pending = got
            self._new_frame.set()
        self._maybe_request(link, receiver)

    # -- loops -----------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        assert self.source is not None
        next_slot = 0.0
        async for frame, t in self.source:
            if time.time() >= self._deadline:
                return
            link = self.link
            if link is None or link.encoder is None or link.remote is None or not link.open:
                continue
            if self.opt.max_fps and t < next_slot - 1e-3:  # --max-fps: this frame falls between two send slots
                continue
            next_slot = max(next_slot + 1 / self.send_fps, t + 0.5 / self.send_fps)
            if not self.pacer.may_send(link.channel.bufferedAmount):
                self.stats.add(congestion_skipped=1)
                continue
            ts_ms = round(t * 1000) - link.epoch_ms
            if ts_ms < 0:
                continue
            started = time.time()
            encoded = await asyncio.to_thread(link.encoder.encode, frame, t)
            encode_ms = (time.time() - started) * 1000
            if link is not self.link or not link.open:
                continue
            if self.paster is not None:
                await self._show_self(frame, encoded)
            if not encoded.has_face:  # say "no face" when it goes, then once a second: nothing to code in between
                if link.no_face_sent_ms is not None and ts_ms - link.no_face_sent_ms < NO_FACE_REPEAT_S * 1000:
                    continue
                link.no_face_sent_ms = ts_ms
            else:
                link.no_face_sent_ms = None
            link.frame = max(round(ts_ms * link.fps / 1000), link.frame + 1)  # strictly increasing camera slot
            packet = restamp(encoded.packet, link.frame, ts_ms)
            if self._transmit(link, packet):
                self.stats.event("tx", seq=packet.seq, frame=packet.frame, type=packet.type.label,
                                 bytes=len(pack(packet, link.fps)), capture_ms=link.epoch_ms + ts_ms,
                                 encode_start_ms=round(started * 1000 - t * 1000, 1), encode_ms=round(encode_ms, 1))

    def _transmit(self, link: Link, packet: Packet) -> bool:
        """Send one packet unless it exceeds what the other side accepts (then count, log and skip it: aiortc would
        raise inside send; the receiver sees the gap and asks for a keyframe). Returns whether it was sent."""
        data = pack(packet, link.fps)
        n, limit = len(data), link.max_message_size()
        try:
            check_message_size(n, limit)
        except MessageTooLarge as exc:
            self.stats.add(tx_oversize=1)
            self.stats.event("oversize", seq=packet.seq, type=packet.type.label, bytes=n, limit=limit)
            if self.stats.total["tx_oversize"] == 1:
                self.stats.say(f"{exc}: not sent (each one is counted as tx_oversize in the log)")
            return False
        link.send(data)
        self.stats.add(tx_frames=1, tx_payload=n, tx_channel=chunk_bytes(n), tx_wire=wire_bytes(n),
                       tx_intra=int(packet.type.is_intra))
        return True

    async def _show_self(self, frame: np.ndarray, encoded: EncodedFrame) -> None:
        """--paste-back: what the other side sees of us, pasted back into our full camera frame.

        Only the aligned face travels, so the full frame can be shown on the sending side only.
        """
        assert self.paster is not None
        if encoded.recon_wplus is None:  # no face: the camera frame as it is (nothing is pasted)
            full = frame
        else:
            face = (await asyncio.to_thread(self.model.render, encoded.recon_wplus[None]))[0]
            full = face if encoded.quad is None else self.paster(frame, face, encoded.quad)
        if self.self_view is None:
            self.self_view = FrameSink(record=self.opt.self_record, fps=self.send_fps, headless=self.opt.headless,
                                       title=f"sganc self view: {self.opt.name}")
        self.self_view.show(full, [f"self view ({encoded.packet.type.label})"])

    async def _render_loop(self) -> None:
        while True:
            await self._new_frame.wait()
            self._new_frame.clear()
            got, self._pending = self._pending, None
            if got is None:
                continue
            started = time.time()
            if got.latents is None:  # the other side has no face in view: show none, never the last one
                image = np.full((self.model.size, self.model.size, 3), NO_FACE_PIXEL, np.uint8)
            else:
                image = (await asyncio.to_thread(self.model.render, got.latents[None]))[0]
            render_ms = (time.time() - started) * 1000
            latency = time.time() * 1000 - got.capture_ms
            if self.sink is None:
                link = self.link
                fps = link.remote.stream.fps if link and link.remote and link.remote.stream else 10.0
                self.sink = FrameSink(record=self.opt.record, fps=fps, headless=self.opt.headless,
                                      title=f"sganc call: {self.opt.name}")
            self.stats.frame_type = got.packet.type.label
            self.sink.show(image, self._overlay_lines(latency))
            self.latencies.append(latency)
            self.stats.latencies.append(latency)
            self.stats.add(displayed=1)
            self.stats.event("display", seq=got.packet.seq, type=got.packet.type.label, latency_ms=round(latency, 1),
                             render_ms=round(render_ms, 1))

    def _overlay_lines(self, latency: float) -> list[str]:
        last = self._last_stats
        loss = self.link.receiver.lost if self.link and self.link.receiver else 0
        return [f"{last.get('rx_wire_kbps', 0):.1f} kbps wire ({last.get('rx_payload_kbps', 0):.1f} payload)",
                f"{last.get('display_fps', 0):.1f} fps  {latency:.0f} ms",
                f"lost {loss}  {self.stats.frame_type}"]

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            receiver = self.link.receiver if self.link else None
            extra = {"connected": self.link is not None and self.link.remote is not None,
                     "rx_lost": receiver.lost if receiver else None,
                     "rx_synced": receiver.synced if receiver else None,
                     "injected_drops": self.loss.dropped, "congestion_skipped": self.pacer.skipped,
                     "camera_dropped": getattr(self.source, "dropped", 0) if self.source else 0}
            self._last_stats = self.stats.tick(extra)

    # -- pairing ---------------------------------------------------------------------------------

    async def _room(self, client: SignalingClient) -> None:
        """Follow the signaling server: offer when a peer joins, answer offers, drop the link when it leaves."""
        while True:
            msg = await client.recv()
            kind = msg.get("type")
            try:
                if kind == "peer-joined":
                    await self._drop_link("replaced")
                    link = self._new_link()
                    desc = await link.offer()
                    await client.send({"type": "offer", "sdp": desc.sdp})
                    self.stats.say("peer joined; offer sent")
                elif kind == "offer":
                    await self._drop_link("replaced")
                    link = self._new_link()
                    desc = await link.answer(remote_description(msg, "offer"))
                    await client.send({"type": "answer", "sdp": desc.sdp})
                    self.stats.say("offer received; answer sent")
                elif kind == "answer" and self.link is not None:
                    await self.link.accept(remote_description(msg, "answer"))
                elif kind == "peer-left":
                    self.stats.say("the other side left; waiting for it to rejoin")
                    await self._drop_link("peer left")
                elif kind == "closed":
                    if self._stopping:
                        return
                    self.stats.say("signaling server went away; the current connection (if any) goes on")
                    await asyncio.Event().wait()
            except (SignalingError, ValueError, InvalidStateError, InvalidAccessError, OperationError) as exc:
                # check_sdp refuses malformed descriptions; aiortc raises these for one that does not fit the state
                self.stats.say(f"ignored a bad description from the other side ({type(exc).__name__}: {exc})")

    async def _serverless(self, role: str, stdin: TextIO, stdout: TextIO) -> None:
        """Copy-paste pairing: print our description as one line, read the other side's."""
        link = self._new_link()
        if role == "offer":
            print(description_to_line(await link.offer()), file=stdout, flush=True)
            line = await read_line(stdin, "paste the other side's answer line:")
            await link.accept(description_from_line(line, "answer"))
        else:
            line = await read_line(stdin, "paste the other side's offer line:")
            desc = await link.answer(description_from_line(line, "offer"))
            print(description_to_line(desc), file=stdout, flush=True)
        await asyncio.Event().wait()

    async def run(self, *, client: SignalingClient | None = None, serverless: str | None = None,
                  stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> dict[str, Any]:
        """Run until ``duration`` ends (or forever); raises SgancError on a refusal. Returns a summary."""
        loop = asyncio.get_running_loop()
        self.fatal = loop.create_future()
        self._deadline = time.time() + self.opt.duration if self.opt.duration else float("inf")
        tasks = [asyncio.ensure_future(self._render_loop()), asyncio.ensure_future(self._stats_loop())]
        if self.opt.send:
            tasks.append(asyncio.ensure_future(self._send_loop()))
        if client is not None:
            await client.join()
            self.stats.say(f"joined room {client.room}")
            self.stats.event("joined", room=client.room)
            tasks.append(asyncio.ensure_future(self._room(client)))
        else:
            tasks.append(asyncio.ensure_future(self._serverless(serverless or "offer", stdin, stdout)))
        waiters = [self.fatal, *tasks]
        timeout = None if self.opt.duration is None else self.opt.duration
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not self.fatal and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if self.fatal.done():
                await asyncio.sleep(0.2)  # let a refusal reach the other side before the channel goes
                raise RefusedError(self.fatal.result())
        finally:
            self._stopping = True
            if client is not None:  # first: a cancelled aiohttp receive() may never finish, a closed one does
                await bounded(client.close(), 12.0)
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await bounded(self._drop_link("finished"), 5.0)
            for sink in (self.sink, self.self_view):
                if sink is not None:
                    sink.close()
            if self.source is not None:
                self.source.close()
            summary = self.summary()
            self.stats.event("summary", **summary)
            self.stats.close()
        return summary

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        total = self.stats.total
        return {"tx_frames": int(total.get("tx_frames", 0)), "rx_frames": int(total.get("rx_frames", 0)),
                "displayed": int(total.get("displayed", 0)),
                "latency_median_ms": round(statistics.median(lat), 1) if lat else None,
                "latency_p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1) if lat else None,
                "keyframe_requests_sent": int(total.get("keyframe_requests_sent", 0)),
                "keyframe_requests_received": int(total.get("keyframe_requests_received", 0)),
                "tx_oversize": int(total.get("tx_oversize", 0)),
                "injected_drops": self.loss.dropped, "congestion_skipped": self.pacer.skipped,
                "recorded": None if self.sink is None or self.opt.record is None else self.sink.frames}


async def bounded(coro: Any, timeout: float) -> None:
    """Await ``coro`` for at most ``timeout`` s, leaving it behind if it will not finish (teardown only)."""
    await asyncio.wait([asyncio.ensure_future(coro)], timeout=timeout)


def room_client(url: str, room: str, token: str) -> SignalingClient:
    """A signaling client for ``room`` (joined by :meth:`Peer.run`)."""
    if not url.startswith(("ws://", "wss://", "http://", "https://")):
        raise SignalingError(f"--signal must be a ws:// or http:// URL, got {url!r}")
    return SignalingClient(url.replace("http://", "ws://").replace("https://", "wss://"), room, token)
