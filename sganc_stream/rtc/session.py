"""One peer of a live call: sends its camera's face, receives and shows the other's (either or both).

A :class:`Peer` outlives its connections: the camera, the workers, the window and the recording keep running
while the other side leaves and rejoins. Pairing (``rtc.pairing``) hands it each connection's data channel as a
:class:`~sganc_stream.rtc.channel.Channel`; on each one a :class:`Link` runs the call protocol (``rtc.transport``,
SPEC.md §8): the hello exchange, a fresh outgoing stream (new generation: the encoder restarts with an intra
frame) and the other side's incoming stream. The event loop only does I/O and bookkeeping; the model runs in
``rtc.worker`` threads, all of it loaded before the peer joins (the encoder with its landmark models, E, G, T).

Everything measurable goes to the stats log (``rtc.stats``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, Union

import numpy as np

from sganc_stream.bitstream.packet import Packet, PacketType, pack
from sganc_stream.errors import BitstreamError, InputError, ModelMismatchError, SgancError
from sganc_stream.face.landmarks import LandmarkBackend
from sganc_stream.face.paste_back import PasteBack
from sganc_stream.fileio import check_writable
from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
from sganc_stream.latent.sequence import stream_params
from sganc_stream.decoding import no_face_pictures
from sganc_stream.encoding import EncodedFrame, FrameEncoder
from sganc_stream.rtc.channel import HUNG_UP, Channel, LossModel, LossyChannel
from sganc_stream.rtc.congestion import BandwidthEstimator, Estimate, SendRate
from sganc_stream.rtc.media import FrameSink, open_source, require_display
from sganc_stream.rtc.pairing import Signaling, consume_signaling
from sganc_stream.rtc.stats import StatsLog, percentile, process_age
from sganc_stream.rtc.transport import (DEFAULT_MAX_BUFFERED, DEFAULT_REDUNDANCY, HELLO_TIMEOUT_S, Delivery,
                                        FrameMessage, Handshake, Hello, HelloAck, IncompatibleError, Late,
                                        MalformedFeedback, MessageTooLarge, Nack, Pacer, PROTOCOL_VERSION,
                                        RTX_WAIT_MS, Redundancy, RefusedError, Retransmission, StreamReceiver,
                                        check_message_size, check_models, feedback_message, parse_message, refusal,
                                        restamp)
from sganc_stream.rtc.wire import wire_bytes
from sganc_stream.rtc.worker import Encoded, ReceiveWorker, SendWorker, Shown, TimedFlows, state_crc
from sganc_stream.video import video_format

from sganc_stream.onnx_runtime import OnnxFaceModel

if TYPE_CHECKING:
    from sganc_stream.pipeline import FaceModel

CallModel = Union["FaceModel", OnnxFaceModel]  # PyTorch or ONNX Runtime (``--runtime``): the call needs no more

TICK_S = 0.05  # hello retransmission check and event-loop lag probe
GOODBYE_S = 1.0  # at most this long for our end packet to reach the other side before the connection closes


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
    landmarks: str | LandmarkBackend = "dlib"  # a backend by name, or one already loaded
    params: StreamParams = field(default_factory=StreamParams)
    redundancy: int = DEFAULT_REDUNDANCY  # previous frame packets carried in each frame message
    redundancy_fit: bool = True  # ... only as far as they fit without another SCTP chunk
    retransmit: bool = True  # answer the other side's NACKs with retransmissions (SPEC §8.7)
    record: Path | None = None
    paste_back: bool = False  # self view: the full camera frame with this side's decoded face pasted back
    self_record: Path | None = None  # record that self view
    headless: bool = False
    duration: float | None = None  # seconds; None: until interrupted or the other side refuses
    loss: float = 0.0  # testing: probability of dropping each message this side sends
    loss_burst: float | None = None  # mean length of loss bursts, in messages (None: independent losses)
    seed: int = 0
    hello_timeout: float = HELLO_TIMEOUT_S
    log: Path | None = None
    ice_servers: list[str] = field(default_factory=list)
    max_buffered: int = DEFAULT_MAX_BUFFERED
    name: str = "peer"
    quiet: bool = False

    def check(self) -> None:
        """Every check that needs no model (InputError, one line): the CLI runs it before loading anything."""
        if not (self.send or self.receive):
            raise InputError("a peer must send, receive, or both")
        if self.receive or self.paste_back:
            require_display(self.headless)
        if self.self_record is not None and not self.paste_back:
            raise InputError("--self-record records the --paste-back self view: pass --paste-back too")
        if self.duration is not None and self.duration <= 0:
            raise InputError(f"--duration must be positive, got {self.duration}")
        if self.max_fps is not None and self.max_fps <= 0:
            raise InputError(f"--max-fps must be positive, got {self.max_fps}")
        if self.hello_timeout <= 0:
            raise InputError(f"--hello-timeout must be positive, got {self.hello_timeout}")
        if self.send and self.video is not None and not Path(self.video).is_file():
            raise InputError(f"video file not found: {self.video}")
        LossModel(self.loss, self.loss_burst)
        Redundancy(self.redundancy)
        Pacer(self.max_buffered)
        for video in (self.record, self.self_record):  # every output, before pairing: not when the call ends
            if video is not None:
                video_format(video)
        if self.log is not None:
            check_writable(self.log)


class Link:
    """The call protocol on one channel: the hello exchange, our outgoing stream, the other side's stream."""

    def __init__(self, raw: Channel, channel: Channel, generation: int, hello: Hello, redundancy: Redundancy,
                 hello_timeout: float, ceiling_kbps: float | None) -> None:
        self.raw, self.channel, self.generation = raw, channel, generation
        self.handshake = Handshake(hello, timeout_s=hello_timeout)
        self.redundancy = redundancy
        self.receiver: StreamReceiver | None = None
        self.frame = -1  # frame index of the last packet sent
        self.gaps_logged = 0  # the receiver's gaps already in the log
        self.estimator = BandwidthEstimator()  # of the other side's stream (congestion control, SPEC §8.8)
        self.send_rate = SendRate(ceiling_kbps)  # of ours: the other side's feedback as our budget
        self.nack: tuple[Nack, float] | None = None  # a NACK whose answer waits for that budget, and since when (s)

    @property
    def feedback_due(self) -> bool:
        """We receive the other side's stream and its hello says it reads feedback."""
        theirs = self.handshake.theirs
        return self.receiver is not None and theirs is not None and theirs.feedback

    @property
    def epoch_ms(self) -> int:
        return self.handshake.ours.epoch_ms

    def send(self, data: bytes) -> None:
        self.channel.send(data)


class Peer:
    """A call participant: camera → encoder → channel, and channel → decoder → window/recording."""

    def __init__(self, model: CallModel, options: PeerOptions, err: TextIO = sys.stderr) -> None:
        options.check()
        self.model, self.opt = model, options
        self.flows = TimedFlows.install(model.codec)  # T and T⁻¹ ms per frame in the log
        self.stats = StatsLog(options.log, options.name, err, options.quiet)
        self.pacer = Pacer(options.max_buffered)
        self.cc_skipped = 0  # frames skipped to keep within the other side's bandwidth estimate (rtc.congestion)
        self.link: Link | None = None
        self.generation = 0
        self.fatal: asyncio.Future[str] | None = None
        self.ending = False  # the duration is over: this side hangs up
        self.sender: SendWorker | None = None
        self.receiver: ReceiveWorker | None = None
        self.sink: FrameSink | None = None
        self.self_view: FrameSink | None = None
        self.source = open_source(options.video, options.camera, options.camera_fps) if options.send else None
        self.encoder: FrameEncoder | None = None
        self.send_fps = 0.0
        if self.source is not None:
            self.send_fps = min(self.source.fps, options.max_fps or self.source.fps)
            # everything the encoder needs is loaded here, before joining: landmark models, E, T, tables
            self.encoder = FrameEncoder(model, options.params, fps=self.send_fps, align=options.align,
                                        landmarks=options.landmarks)
        self.paster = PasteBack(model.size) if options.paste_back else None

    # -- the channel of each connection (ChannelHandler) ---------------------------------------------

    def attach(self, channel: Channel) -> None:
        """A connection's data channel is open: run the call protocol on it (it replaces any earlier one)."""
        self.generation += 1
        wrapped = channel
        if self.opt.loss:
            wrapped = LossyChannel(channel, LossModel(self.opt.loss, self.opt.loss_burst, self.opt.seed + self.generation))
        stream = self.encoder.header(0) if self.encoder is not None else None
        hello = Hello(self.model.model_id, stream, round(time.time() * 1000), feedback=stream is not None,
                      rtx=stream is not None and self.opt.retransmit)
        link = Link(channel, wrapped, self.generation, hello, Redundancy(self.opt.redundancy, self.opt.redundancy_fit),
                    self.opt.hello_timeout, self.opt.params.target_kbps)
        self.link = link
        wrapped.on_message = lambda data: self._on_message(link, data)
        wrapped.on_close = lambda why: self._on_lost(link, why)
        self._send_hello(link)
        self.stats.event("open", generation=link.generation)

    def release(self, channel: Channel, why: str) -> None:
        """This side drops the connection: an end packet for our stream, then forget it."""
        link = self.link
        if link is None or link.raw is not channel:
            return
        self.link = None
        if self.encoder is not None and link.handshake.acked:
            link.send(pack(Packet(PacketType.END, link.redundancy.next_seq, max(link.frame, 0), 0), self.send_fps))
        self.stats.event("left", reason=why)

    def _on_lost(self, link: Link, why: str) -> None:
        if link is self.link:
            self.link = None
            if why == HUNG_UP or (link.receiver is not None and link.receiver.ended):  # the other side hung up
                self.say("the other side ended the call; waiting for it to rejoin")
            else:
                self.say(f"connection lost ({why}); waiting for the other side")
            self.stats.event("left", reason=why)

    def say(self, text: str) -> None:
        """A line about the call's state on stderr; none once this side is hanging up (its duration is over): the
        teardown's own signaling and channel closes are no news."""
        if not self.ending:
            self.stats.say(text)

    def _fail(self, message: str) -> None:
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(message)

    def _send_hello(self, link: Link) -> None:
        data = link.handshake.due()
        if data is not None:
            link.send(data)
            self.stats.add(hellos_sent=1)

    # -- receiving ---------------------------------------------------------------------------------

    def _on_message(self, link: Link, data: bytes | str) -> None:
        if link is not self.link:
            return
        self.stats.message("rx", len(data))
        receiver = link.receiver
        try:
            msg = parse_message(data, None if receiver is None else receiver.reader)  # type: ignore[arg-type]
        except IncompatibleError as exc:
            link.send(refusal(f"it speaks call protocol {PROTOCOL_VERSION} only"))
            self._fail(str(exc))
            return
        except RefusedError as exc:
            self._fail(str(exc))
            return
        except MalformedFeedback:  # about our stream, not theirs: the decoder stays in sync
            self.stats.add(rx_malformed_feedback=1)
            return
        except BitstreamError:
            self.stats.add(rx_malformed=1)
            if receiver is not None:
                receiver.on_undecodable()
                self._maybe_request(link, receiver)
            return
        if isinstance(msg, Hello):
            self._on_hello(link, msg)
        elif isinstance(msg, HelloAck):
            if not link.handshake.acked:
                link.handshake.on_ack(msg)
                if link.handshake.acked:
                    self.stats.event("acked", hellos_sent=link.handshake.sent)
        elif isinstance(msg, Estimate):  # the other side's bandwidth estimate for our stream
            self._on_feedback(link, msg)
        elif isinstance(msg, Packet):  # a keyframe request for our stream
            if self.sender is not None:
                self.sender.request_keyframe()
                self.stats.add(keyframe_requests_received=1)
        elif isinstance(msg, Nack):  # packets of our stream the other side lost
            self._on_nack(link, msg)
        elif receiver is None:
            return
        elif isinstance(msg, Retransmission):  # bytes of their stream: the incoming rate counts them
            link.estimator.on_message(time.monotonic(), wire_bytes(len(data)), None)
            self.stats.add(rx_rtx=1)
            self._take(link, receiver, receiver.on_retransmission(msg), len(data))
        elif isinstance(msg, Late):  # behind the last packet read: late, or a reordered one that ends a repair
            link.estimator.on_message(time.monotonic(), wire_bytes(len(data)), None)
            delivery = receiver.on_late_message(msg, len(data))
            if delivery is None:
                self.stats.add(rx_late=1)
            self._take(link, receiver, delivery, len(data))
        else:
            self._on_frame(link, receiver, msg, len(data))

    def _on_feedback(self, link: Link, fb: Estimate) -> None:
        if link.send_rate.on_feedback(fb):
            self.stats.add(feedback_received=1)
            target = link.send_rate.target_kbps()
            self.stats.event("feedback", n=fb.n, estimate_kbps=round(fb.estimate_bps / 1000, 2),
                             incoming_kbps=round(fb.incoming_bps / 1000, 2),
                             target_kbps=None if target is None else round(target, 2))

    def _send_feedback(self, link: Link) -> None:
        """Our estimate of the other side's stream, when one is due (SPEC §8.8)."""
        est = link.estimator
        fb = est.feedback(time.monotonic())
        if fb is None:
            return
        link.send(feedback_message(fb))
        self.stats.add(feedback_sent=1)
        self.stats.event("bwe", n=fb.n, estimate_kbps=round(fb.estimate_bps / 1000, 2),
                         incoming_kbps=round(fb.incoming_bps / 1000, 2), signal=est.signal,
                         trend=round(est.detector.modified, 2), threshold=round(est.detector.threshold, 2))

    def _on_hello(self, link: Link, hello: Hello) -> None:
        link.send(HelloAck(hello.epoch_ms).to_bytes())  # every hello is acknowledged: the first ack may be lost
        if not link.handshake.on_hello(hello):
            return
        try:
            check_models(self.model.model_id, hello.model_id)
            params = stream_params(self.model.codec, hello.stream) if hello.stream is not None else None
        except ModelMismatchError as exc:
            link.send(refusal(str(exc)))
            self._fail(str(exc))
            return
        if params is not None and self.receiver is not None:
            link.receiver = StreamReceiver(hello)
            codec = self.model.codec
            version = hello.stream.version  # v4 with the sender's --target-kbps (steps in the header)
            self.receiver.new_stream(link.generation, lambda: LatentStreamDecoder(codec, params, version))
        self.stats.event("hello", model_id=hello.model_id, sends=hello.stream is not None,
                         fps=None if hello.stream is None else hello.stream.fps,
                         version=None if hello.stream is None else hello.stream.version,
                         residual=None if hello.stream is None else hello.stream.residual,
                         steps=None if hello.stream is None else list(hello.stream.steps))
        self.stats.say("connected" + ("" if hello.stream is None else f"; receiving {hello.stream.fps:g} fps"))

    def _on_nack(self, link: Link, nack: Nack) -> None:
        """Answer a NACK (SPEC §8.7) within our rate budget (§8.8): see :meth:`_answer_nack`. A NACK repeated while
        the answer to an earlier one waits replaces it (it names what is still missing) and keeps its waiting time."""
        self.stats.add(nacks_received=1)
        waiting = link.nack
        link.nack = (nack, time.monotonic() if waiting is None else waiting[1])
        self._answer_nack(link)

    def _answer_nack(self, link: Link) -> None:
        """The answer to the NACK that waits, if any: the packets it names again, or an intra frame when they are no
        longer kept or cost more; nothing when an intra frame sent since repairs the gap (a NACK repeated before it
        arrived). A retransmission goes when the rate budget admits it as it would a frame, ahead of the frames,
        which wait meanwhile; one that waited ``RTX_WAIT_MS`` is dropped (the receiver has given up on it and asks
        for a keyframe). An intra frame answer is the next frame the budget admits."""
        if link.nack is None:
            return
        (nack, since), now = link.nack, time.monotonic()
        superseded = self.sender is None or link.redundancy.superseded(nack)
        if superseded or now - since > RTX_WAIT_MS / 1000:
            if not superseded:
                self.stats.add(rtx_expired=1)
                self.stats.event("rtx_expired", first=nack.first, last=nack.last, waited_ms=round((now - since) * 1000))
            link.nack = None
            link.send_rate.drop_repair()
            return
        data = link.redundancy.retransmission(nack, link.channel.max_message_size) if self.opt.retransmit else None
        if data is None:
            link.nack = None
            link.send_rate.drop_repair()
            self.sender.request_keyframe()
            self.stats.event("rtx", first=nack.first, last=nack.last, bytes=0)
            return
        if not link.send_rate.may_repair(now):
            return  # the tick asks again
        link.nack = None
        link.send(data)
        self.stats.message("tx", len(data))
        link.send_rate.repaired(now, wire_bytes(len(data)))
        self.stats.add(rtx_sent=1)
        self.stats.event("rtx", first=nack.first, last=nack.last, bytes=len(data), waited_ms=round((now - since) * 1000))

    def _on_frame(self, link: Link, receiver: StreamReceiver, msg: FrameMessage, size: int) -> None:
        link.estimator.on_message(time.monotonic(), wire_bytes(size), msg.packet.timestamp_ms)
        self._take(link, receiver, receiver.on_message(msg, size), size)

    def _take(self, link: Link, receiver: StreamReceiver, delivery: Delivery | None, size: int) -> None:
        """What a message of the other side's stream gave (a delivery to decode and show, or None), then any NACK
        or keyframe request now due."""
        if delivery is not None and delivery.packet.type == PacketType.NO_FACE:
            assert self.receiver is not None
            self.stats.add(rx_no_face=1)
            self.stats.event("rx_no_face", seq=delivery.packet.seq, frame=delivery.packet.frame, bytes=size)
            self.receiver.submit(link.generation, delivery)
        elif delivery is not None:
            assert self.receiver is not None
            packet = delivery.packet
            self.stats.add(rx_frames=1, rx_restored=delivery.recovered)
            self.stats.event("rx", seq=packet.seq, frame=packet.frame, type=packet.type.label, bytes=size,
                             capture_ms=round(delivery.capture_ms, 1), restored=delivery.recovered)
            if delivery.recovered_ms is not None:
                self.stats.event("sync", seq=packet.seq, recovery_ms=round(delivery.recovered_ms, 1))
            if delivery.repaired_ms is not None:
                self.stats.add(rx_repaired=1)
                self.stats.event("repaired", seq=packet.seq, repair_ms=round(delivery.repaired_ms, 1),
                                 restored=delivery.recovered)
            self.receiver.submit(link.generation, delivery)
        self._maybe_request(link, receiver)

    def _maybe_request(self, link: Link, receiver: StreamReceiver) -> None:
        nack = receiver.nack_due()
        if nack is not None:
            link.send(nack.to_bytes())
            self.stats.add(nacks_sent=1)
            self.stats.event("nack", first=nack.first, last=nack.last)
        if receiver.want_keyframe():
            link.send(receiver.keyframe_request())
            self.stats.add(keyframe_requests_sent=1)
            self.stats.event("keyframe_request", expected=receiver.expected)
        if receiver.gaps > link.gaps_logged:  # losses that needed a keyframe
            link.gaps_logged = receiver.gaps
            self.stats.event("gap", seq=receiver.highest_seq, expected=receiver.expected)

    def _undecodable(self, generation: int, sync_id: int, why: str) -> None:
        link = self.link
        self.stats.add(rx_undecodable=1)
        self.stats.event("undecodable", reason=why[:200])
        if link is not None and link.generation == generation and link.receiver is not None:
            link.receiver.on_undecodable(sync_id)
            self._maybe_request(link, link.receiver)

    def _shown(self, shown: Shown) -> None:
        latency = shown.shown_at * 1000 - shown.delivery.capture_ms
        packet = shown.delivery.packet
        if packet.type == PacketType.NO_FACE:  # no G pass: kept out of the face frames' latency figures
            self.stats.add(displayed_no_face=1)
            self.stats.event("display_no_face", seq=packet.seq, latency_ms=round(latency, 1))
            return
        self.stats.latency(latency)
        self.stats.add(displayed=1)
        self.stats.event("display", seq=packet.seq, type=packet.type.label, latency_ms=round(latency, 1),
                         decode_ms=round(shown.decode_ms, 1), render_ms=round(shown.render_ms, 1),
                         **({} if shown.t_inv_ms is None else {"T_inv_ms": round(shown.t_inv_ms, 1)}),
                         state_crc=shown.state_crc,
                         waiting=shown.waiting)

    def _show(self, image: np.ndarray, delivery: Delivery) -> None:
        """Receive worker thread: the window and the recording."""
        if self.sink is None:
            link = self.link
            fps = link.receiver.hello.stream.fps if link and link.receiver and link.receiver.hello.stream else 10.0
            self.sink = FrameSink(record=self.opt.record, fps=fps, headless=self.opt.headless,
                                  title=f"sganc call: {self.opt.name}")
        last = self.stats.last
        lost = self.link.receiver.lost if self.link and self.link.receiver else 0
        kind = "no face in the other side's camera" if delivery.packet.type == PacketType.NO_FACE else \
            delivery.packet.type.label
        self.sink.show(image, [f"{last.get('rx_wire_kbps', 0):.1f} kbps wire ({last.get('rx_payload_kbps', 0):.1f} payload)",
                               f"{last.get('display_fps', 0):.1f} fps  {last.get('latency_ms') or 0:.0f} ms",
                               f"lost {lost}  {kind}"], delivery.capture_ms)

    # -- sending -----------------------------------------------------------------------------------

    def _gate(self) -> int | None:
        """Encode thread: the generation to code the next frame for, or None to skip it."""
        link = self.link
        if link is None or not link.handshake.acked or not link.channel.is_open:
            return None
        if not self.pacer.may_send(link.channel.buffered_amount):
            return None
        if not link.send_rate.may_send(time.monotonic()):  # over the other side's estimate: skip this frame
            self.cc_skipped += 1
            return None
        target = link.send_rate.target_kbps()
        rate = self.encoder.latent.rate if self.encoder is not None else None
        if target is not None and rate is not None and link.send_rate.budget_bps is not None:
            rate.retarget(target, link.send_rate.offered_fps or self.send_fps)
        return link.generation

    def _deliver(self, enc: Encoded) -> None:
        link = self.link
        if link is None or link.generation != enc.generation or not link.channel.is_open:
            return
        ts_ms = round(enc.capture_time * 1000) - link.epoch_ms
        link.frame = max(round(ts_ms * self.send_fps / 1000), link.frame + 1)  # strictly increasing camera slot
        packet = restamp(enc.frame.packet, link.frame, ts_ms)
        carried = link.redundancy.carried
        limit = link.channel.max_message_size
        data = link.redundancy.message(packet, self.send_fps, limit)
        n = len(data)
        try:
            check_message_size(n, limit)
        except MessageTooLarge as exc:  # aiortc would raise inside send: not sent; the receiver asks for a keyframe
            self.stats.add(tx_oversize=1)
            self.stats.event("oversize", seq=packet.seq, type=packet.type.label, bytes=n, limit=limit)
            if self.stats.total["tx_oversize"] == 1:
                self.stats.say(f"{exc}: not sent (each one is counted as tx_oversize in the log)")
            return
        link.send(data)
        self.stats.message("tx", n)
        packet_bytes = len(pack(packet, self.send_fps))
        link.send_rate.sent(time.monotonic(), wire_bytes(n), packet_bytes)
        if packet.type == PacketType.NO_FACE:
            self.stats.add(tx_no_face=1)
            self.stats.event("tx_no_face", seq=packet.seq, frame=packet.frame, bytes=n, capture_ms=link.epoch_ms + ts_ms,
                             align_ms=round(enc.timing.get("align", 0.0), 1))
            return
        coded = enc.frame.coded
        assert coded is not None  # a face packet
        self.stats.add(tx_frames=1, tx_intra=int(packet.type.is_intra), tx_redundant=link.redundancy.carried - carried)
        self.stats.event("tx", seq=packet.seq, frame=packet.frame, type=packet.type.label, bytes=n,
                         packet_bytes=packet_bytes, redundant=link.redundancy.carried - carried,
                         capture_ms=link.epoch_ms + ts_ms,
                         encode_start_ms=round((enc.encode_start - enc.capture_time) * 1000, 1),
                         encode_ms=round(sum(enc.timing.values()), 1), step=coded.step, state_crc=state_crc(coded.state),
                         **{f"{k}_ms": round(v, 1) for k, v in enc.timing.items()})

    def _show_self(self, encoded: EncodedFrame, frame: np.ndarray) -> None:
        """Encode thread, ``--paste-back``: what the other side sees of us, pasted into our full camera frame.

        Only the aligned face travels, so the full frame can be shown on the sending side only. Without a face
        the camera frame is shown as it is (nothing is pasted, as ``paste_back`` in a transcode).
        """
        assert self.paster is not None
        if not encoded.has_face:
            self._self_sink().show(frame, ["self view (no face found)"], encoded.packet.timestamp_ms)
            return
        face = self.model.render(encoded.recon_wplus[None])[0]
        full = face if encoded.quad is None else self.paster(frame, face, encoded.quad)
        self._self_sink().show(full, [f"self view ({encoded.packet.type.label})"], encoded.packet.timestamp_ms)

    def _self_sink(self) -> FrameSink:
        if self.self_view is None:
            self.self_view = FrameSink(record=self.opt.self_record, fps=self.send_fps, headless=self.opt.headless,
                                       title=f"sganc self view: {self.opt.name}")
        return self.self_view

    def _worker_failed(self, exc: BaseException) -> None:
        self._fail(str(exc) if isinstance(exc, SgancError) else f"internal error in a worker: {type(exc).__name__}: {exc}")

    # -- the call ----------------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Hello retransmissions and timeouts, a retransmission waiting for the rate budget, NACK retries, feedback,
        the loop-lag probe, and the one-second stats."""
        next_stats = time.monotonic() + 1.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.stats.lag((now - before - TICK_S) * 1000)
            link = self.link
            if link is not None:
                self._send_hello(link)
                self._answer_nack(link)  # a retransmission waiting for the rate budget
                if link.receiver is not None and link.receiver.repair is not None:  # NACK retries, not only on arrivals
                    self._maybe_request(link, link.receiver)
                if link.feedback_due:
                    self._send_feedback(link)
                failure = link.handshake.failure()
                if failure is not None:
                    self._fail(failure)
            if now >= next_stats:
                next_stats += 1.0
                self._tick_stats()

    def _tick_stats(self) -> None:
        link = self.link
        receiver = link.receiver if link else None
        self.stats.tick({"connected": link is not None and link.handshake.established,
                         "rx_lost": receiver.lost if receiver else None,
                         "rx_synced": receiver.synced if receiver else None,
                         "congestion_skipped": self.pacer.skipped,
                         "cc_skipped": self.cc_skipped,
                         "budget_kbps": None if link is None or link.send_rate.budget_bps is None
                         else round(link.send_rate.budget_bps / 1000, 2),
                         "camera_dropped": self.sender.camera_dropped if self.sender else 0,
                         "rx_superseded": self.receiver.superseded if self.receiver else 0})

    def _start_workers(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.encoder is not None and self.source is not None:
            self.sender = SendWorker(iter(self.source), self.encoder, fps=self.source.fps, max_fps=self.opt.max_fps,
                                     gate=self._gate, deliver=self._deliver, fail=self._worker_failed, loop=loop,
                                     self_view=self._show_self if self.paster is not None else None,
                                     flows=self.flows)
            self.sender.start()
        if self.opt.receive:
            self.receiver = ReceiveWorker(self._render, self._show, shown=self._shown,
                                          undecodable=self._undecodable, overrun=self._overrun,
                                          fail=self._worker_failed, loop=loop, flows=self.flows)
            self.receiver.start()

    def _render(self, latents: np.ndarray | None) -> np.ndarray:
        """Receive worker thread: G on one W+ frame, or the library's no-face picture (never the last face)."""
        if latents is None:
            return no_face_pictures(1, self.model.size)[0]
        return self.model.render(latents[None])[0]

    def _overrun(self, generation: int, sync_id: int) -> None:
        self.stats.add(rx_overrun=1)
        self._undecodable(generation, sync_id, "the decoder fell behind: backlog dropped")

    async def run(self, signaling: Signaling | None = None, *, channel: Channel | None = None,
                  startup: dict[str, tuple[float | None, float]] | None = None) -> dict[str, Any]:
        """Run the call until ``duration`` ends (or forever): paired through ``signaling``, or on an already open
        ``channel`` (tests). ``startup``: (the process's age, its CPU seconds) after each start-up step, logged
        with "joined" (``startup_s``, ``startup_cpu_s``). Raises RefusedError (one line) when the call is refused or cannot be set up; returns a summary."""
        loop = asyncio.get_running_loop()
        self.fatal = loop.create_future()
        self._start_workers(loop)
        tasks = [asyncio.ensure_future(self._tick())]
        try:
            if signaling is not None:
                said = await signaling.connect()
                if said:
                    self.stats.say(said)
                age = process_age()
                self.stats.event("joined", process_age_s=None if age is None else round(age, 2),
                                 runtime="onnx" if isinstance(self.model, OnnxFaceModel) else "torch",
                                 encoder_precision=self.model.encoder_precision if isinstance(self.model, OnnxFaceModel)
                                 else "fp32" if self.opt.send else None,
                                 startup_s={k: None if v[0] is None else round(v[0], 2)
                                            for k, v in (startup or {}).items()},
                                 startup_cpu_s={k: round(v[1], 2) for k, v in (startup or {}).items()},
                                 cpu_s=round(time.process_time(), 2))
                tasks.append(asyncio.ensure_future(consume_signaling(signaling, self, ice_servers=self.opt.ice_servers,
                                                                     say=self.say)))
            elif channel is not None:
                self.attach(channel)
            done, _ = await asyncio.wait([self.fatal, *tasks], timeout=self.opt.duration,
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not self.fatal and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if self.fatal.done():
                await asyncio.sleep(0.2)  # let a refusal reach the other side before the channel goes
                raise RefusedError(self.fatal.result())
            if not done:  # the duration ran out: a normal end, said once
                self.stats.say(f"call ended after --duration {self.opt.duration:g} s")
                self.ending = True
        finally:
            if self.link is not None:  # first the end packet, delivered: the other side hears "ended", not "lost"
                link = self.link
                self.release(link.raw, "finished")
                await link.raw.close_gracefully(GOODBYE_S)
            if signaling is not None:  # next: a cancelled aiohttp receive() may never finish, a closed one does
                await bounded(signaling.close(), 12.0)
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await asyncio.to_thread(self._stop_workers)
            summary = self.summary()
            self.stats.event("summary", **summary)
            self.stats.close()
        return summary

    def _stop_workers(self) -> None:
        """Stop the threads, then close what they wrote to (a recording is finished here)."""
        for worker in (self.sender, self.receiver):
            if worker is not None:
                worker.stop()
        for sink in (self.sink, self.self_view):
            if sink is not None:
                sink.close()
        if self.source is not None:
            self.source.close()

    def summary(self) -> dict[str, Any]:
        total, lat = self.stats.total, self.stats.latencies
        return {"tx_frames": int(total.get("tx_frames", 0)), "rx_frames": int(total.get("rx_frames", 0)),
                "displayed": int(total.get("displayed", 0)), "restored": int(total.get("rx_restored", 0)),
                "repaired": int(total.get("rx_repaired", 0)), "nacks_sent": int(total.get("nacks_sent", 0)),
                "retransmissions_sent": int(total.get("rtx_sent", 0)),
                "tx_no_face": int(total.get("tx_no_face", 0)), "rx_no_face": int(total.get("rx_no_face", 0)),
                "displayed_no_face": int(total.get("displayed_no_face", 0)),
                "superseded": self.receiver.superseded if self.receiver else 0,
                "latency_median_ms": percentile(lat, 0.5), "latency_p95_ms": percentile(lat, 0.95),
                "keyframe_requests_sent": int(total.get("keyframe_requests_sent", 0)),
                "tx_oversize": int(total.get("tx_oversize", 0)),
                "keyframe_requests_received": int(total.get("keyframe_requests_received", 0)),
                "congestion_skipped": self.pacer.skipped, "cc_skipped": self.cc_skipped,
                "recorded": None if self.sink is None or self.opt.record is None else self.sink.frames}


async def bounded(coro: Any, timeout: float) -> None:
    """Await ``coro`` for at most ``timeout`` s, leaving it behind if it will not finish (teardown only)."""
    await asyncio.wait([asyncio.ensure_future(coro)], timeout=timeout)
