"""The live call's data-channel protocol (call protocol 2): channel choice, hello exchange, frame messages with
in-band redundancy, gap handling, keyframe requests, pacing, rate feedback (the estimator is ``rtc.congestion``). ``bitstream_spec/SPEC.md`` §8 ("Live call") is the
normative description; this module is its implementation, with no I/O of its own (the clock is injected).

Channel: one data channel per call, created on both sides with ``negotiated=True, id=0``, label ``sganc``,
``ordered=False, maxRetransmits=0``. A frame is worth showing only when it arrives on time, so nothing is
retransmitted by SCTP (a retransmission costs at least a round trip and, ordered, holds back every later frame); a
loss is repaired from the redundancy the next message carries, else by a retransmission the receiver NACKs (only the
gap waits for it), and as a last resort by a keyframe request.

Messages are binary msgpack, told apart by their first byte: a control map (msgpack fixmap, 0x80–0x8F: hello,
hello acknowledgement, refusal, feedback), a packet (fixarray of 5, 0x95: exactly a .sgnc packet, e.g. a keyframe request
or the end packet) or a frame message (fixarray of 6, 0x96: the 5 packet fields plus a list of redundant
``[type, payload]`` pairs; entry ``k`` (from 1) is the frame packet with sequence number ``seq − k``).

No face: while the sender's camera shows none it sends §3's no-face packet per coded slot (a plain packet, never
with redundancy); the receiver shows a picture that is not a face and keeps its state, and a no-face packet naming a
later sequence number than expected reveals lost face packets (out of sync at once, a keyframe is asked for).

Message size: SCTP peers announce the largest message they accept (SDP ``a=max-message-size``, RFC 8841: 64 KiB
when absent, 0 for no limit), and aiortc raises inside ``send`` above it. A frame message carries redundancy only
while it stays within that size, and a packet that alone exceeds it (a large model's intra frame with out-of-range
latents can reach ~50 KB) is not sent: the sender counts and logs it, the receiver repairs the gap with a keyframe
request.

Hello: each side repeats ``{"sganc": 2, "model_id": bin32, "stream": StreamHeader map | nil, "epoch_ms": int}``
(the header map's fields tell its bitstream version: v4 with ``steps`` for a rate-controlled stream, else v2)
every ``HELLO_RETRY_S`` until it receives ``{"sganc": 2, "ack": epoch_ms}`` echoing its epoch; it answers every
hello it receives with such an acknowledgement. A side with no hello from the other ``HELLO_TIMEOUT_S`` after the
channel opened ends the call with one line. A different model id or protocol version is refused with
``{"refuse": reason}``, and both sides end with one line. ``epoch_ms`` is the sender's wall clock (ms) at timestamp
0 of its packets, so capture-to-display latency is ``now - (epoch_ms + packet.timestamp_ms)`` (on one machine
exactly; across machines it also includes their clock offset).

NACK and retransmission (SPEC §8.7): a sender that keeps its packets says ``"rtx": true`` in its hello; the receiver
of its stream then answers a gap redundancy cannot bridge with ``{"sganc": 2, "nack": [first, last]}``, holding the
messages that follow, and the sender answers with ``{"sganc": 2, "rtx": first, "p": [[type, payload], ...]}`` (or an
intra frame when it no longer has them), within its rate budget. A hello without the key gets no NACK: keyframe
requests, as before.

Feedback (congestion control, SPEC §8.8): a sender that reads it says ``"feedback": true`` in its hello; the receiver
of its stream then sends ``{"sganc": 2, "fb": n, "bwe": bit/s, "rx": bit/s}`` every 0.5 s (at once when its estimate
falls), and the sender keeps its stream within ``bwe``. A hello without the key (an older peer) gets no feedback, and a
sender that gets none sends as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from sganc_stream.bitstream.container import VERSION, VERSION_RATE, VERSION_RESIDUAL, StreamHeader
from sganc_stream.bitstream.packet import COMPACT, MAX_PAYLOAD, SEQ_MODULUS, Packet, PacketReader, PacketType, pack
from sganc_stream.errors import BitstreamError, ModelMismatchError, SgancError
from sganc_stream.rtc.congestion import Estimate
from sganc_stream.rtc.wire import sctp_chunks

PROTOCOL_VERSION = 2
CHANNEL_LABEL = "sganc"
CHANNEL_OPTIONS: dict[str, Any] = {"ordered": False, "maxRetransmits": 0, "negotiated": True, "id": 0}
DEFAULT_MAX_BUFFERED = 2 * 1024  # bytes waiting in the data channel beyond which frames are skipped (see Pacer)
HELLO_RETRY_S = 0.25
HELLO_TIMEOUT_S = 5.0
KEYFRAME_RETRY_MS = 200.0
MAX_REDUNDANCY = 4
NACK_TRIES = 3  # NACKs per gap before the receiver falls back to keyframe requests (SPEC §8.7)
NACK_RETRY_MIN_MS = 40.0  # a NACK is repeated after twice the measured repair round trip, at least this long
RTX_WAIT_MS = NACK_TRIES * KEYFRAME_RETRY_MS  # a NACK's answer waits this long at most for the rate budget (§8.7)
RTX_HISTORY = 64  # frame packets (since the last intra frame) a sender keeps to answer NACKs: 2.6 s at 25 fps
LATE_RUN_RESYNC = 8  # this many late messages in a row: the 8-bit sequence numbers lost their anchor (a long outage)
DEFAULT_REDUNDANCY = 2  # benchmarks/call_redundancy.py: most frames shown of the depths that never add a datagram
DEFAULT_PEER_MAX_MESSAGE = 65536  # RFC 8841 §6: the max-message-size to assume when the other side's SDP names none
PACKET_ARRAY, FRAME_ARRAY = 0x95, 0x96
CONTROL_PREFIX = bytes([PACKET_ARRAY, int(PacketType.KEYFRAME_REQUEST)])  # a keyframe request: fixarray(5), type 3


class RefusedError(SgancError):
    """The call was refused: the other side sent a refusal, or it cannot be talked to (its model or protocol)."""


class MessageTooLarge(SgancError):
    """A message is larger than the other side accepts (its SDP max-message-size)."""


def peer_max_message(sdp: str) -> int:
    """The largest message (bytes) the side that wrote ``sdp`` accepts on its data channel: RFC 8841's
    ``a=max-message-size``; 65536 when absent; 0 means no limit."""
    for line in sdp.splitlines():
        if line.startswith("a=max-message-size:"):
            value = line.split(":", 1)[1].strip()
            if value.isdigit():
                return int(value)
    return DEFAULT_PEER_MAX_MESSAGE


def check_message_size(n: int, limit: int) -> None:
    """MessageTooLarge when an ``n``-byte message exceeds ``limit`` (0 = no limit)."""
    if limit and n > limit:
        raise MessageTooLarge(f"a {n}-byte frame message exceeds the other side's max message size ({limit} bytes)")


class IncompatibleError(RefusedError):
    """The other side speaks another call protocol: refuse it (tell it why) and end."""


@dataclass(frozen=True)
class Hello:
    """What each side announces when the channel opens (repeated until acknowledged)."""

    model_id: str  # hex SHA-256 of the model bundle
    stream: StreamHeader | None  # None: this side only receives
    epoch_ms: int
    feedback: bool = False  # this side reads rate feedback for its stream (SPEC §8.8); absent in older peers' hellos
    rtx: bool = False  # this side answers NACKs for its stream with retransmissions (SPEC §8.7); absent in older hellos

    def to_bytes(self) -> bytes:
        m: dict[str, Any] = {"sganc": PROTOCOL_VERSION, "model_id": bytes.fromhex(self.model_id),
                             "stream": None if self.stream is None else self.stream.to_map(), "epoch_ms": self.epoch_ms}
        if self.feedback:
            m["feedback"] = True
        if self.rtx:
            m["rtx"] = True
        return msgpack.packb(m, use_bin_type=True)


@dataclass(frozen=True)
class HelloAck:
    """"I have your hello": echoes the hello's ``epoch_ms``."""

    epoch_ms: int

    def to_bytes(self) -> bytes:
        return msgpack.packb({"sganc": PROTOCOL_VERSION, "ack": self.epoch_ms}, use_bin_type=True)


class MalformedFeedback(BitstreamError):
    """A feedback message (rate feedback, SPEC §8.8, or a NACK, §8.7) that is not one: ignored and counted; it says
    nothing about the media stream."""


FEEDBACK_MAX_BPS = 1 << 40  # a larger rate in a feedback message is malformed


def feedback_message(fb: Estimate) -> bytes:
    """The feedback message (SPEC §8.8) reporting ``fb``: ``{"sganc": 2, "fb": n, "bwe": bit/s, "rx": bit/s}``."""
    return msgpack.packb({"sganc": PROTOCOL_VERSION, "fb": fb.n, "bwe": fb.estimate_bps, "rx": fb.incoming_bps},
                         use_bin_type=True)


def _feedback(m: dict[str, Any]) -> Estimate:
    fields = (m.get("fb"), m.get("bwe"), m.get("rx"))
    if not all(type(v) is int and 0 <= v < FEEDBACK_MAX_BPS for v in fields):
        raise MalformedFeedback("malformed feedback message: fb, bwe and rx must be non-negative integers")
    return Estimate(*fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Nack:
    """"Send me the frame packets ``first … last`` of your stream again" (SPEC §8.7; RFC 4585's generic NACK)."""

    first: int
    last: int

    def to_bytes(self) -> bytes:
        return msgpack.packb({"sganc": PROTOCOL_VERSION, "nack": [self.first, self.last]}, use_bin_type=True)


@dataclass(frozen=True)
class Retransmission:
    """The answer to a :class:`Nack` (SPEC §8.7; as RTP retransmission, RFC 4588): the frame packets with sequence
    numbers ``first, first + 1, …`` as ``(type, payload)``, oldest first."""

    first: int
    packets: tuple[tuple[PacketType, bytes], ...]

    def to_bytes(self) -> bytes:
        return msgpack.packb({"sganc": PROTOCOL_VERSION, "rtx": self.first,
                              "p": [[int(t), p] for t, p in self.packets]}, use_bin_type=True)


def _nack(m: dict[str, Any]) -> Nack:
    r = m["nack"]
    if (not isinstance(r, (list, tuple)) or len(r) != 2 or not all(type(v) is int for v in r)
            or not 0 <= r[0] <= r[1] < FEEDBACK_MAX_BPS):
        raise MalformedFeedback("malformed NACK: nack must be [first, last] with 0 <= first <= last")
    return Nack(r[0], r[1])


def _retransmission(m: dict[str, Any]) -> Retransmission:
    first = m["rtx"]
    if type(first) is not int or not 0 <= first < FEEDBACK_MAX_BPS:
        raise BitstreamError("malformed retransmission: rtx must be a non-negative integer")
    return Retransmission(first, _frame_entries(m.get("p"), RTX_HISTORY, "retransmission"))


@dataclass(frozen=True)
class FrameMessage:
    """A packet of the other side's stream, with the redundant copies of its predecessors it carries.

    ``redundant[k - 1]`` is ``(type, payload)`` of the frame packet with sequence number ``packet.seq - k``.
    """

    packet: Packet
    redundant: tuple[tuple[PacketType, bytes], ...] = ()


@dataclass(frozen=True)
class Late:
    """A compact packet older than (or a duplicate of) the last one read: of no use any more, unless it fills a gap
    that waits for a retransmission (reordered, not lost: :meth:`StreamReceiver.on_late_message`)."""

    seq8: int
    message: FrameMessage | None = None  # placed behind the last packet read; None when that is before the stream


def _behind(reader: PacketReader, fields: list[Any], redundant: tuple[tuple[PacketType, bytes], ...]) -> Late:
    """A compact packet whose 8-bit number is at or behind ``reader.last_seq``, placed behind it (§8.5: the nearest
    sequence number not after the last one read), leaving ``reader`` as it was."""
    latest = reader.last_seq
    assert latest is not None
    seq = latest - (latest - fields[1]) % SEQ_MODULUS
    if seq < 0:
        return Late(fields[1])
    reader.last_seq = seq - 1  # the reader places a compact number just after its last one
    try:
        packet = reader.from_fields(fields)
    finally:
        reader.last_seq = latest
    return Late(fields[1], FrameMessage(packet, redundant))


def refusal(reason: str) -> bytes:
    return msgpack.packb({"refuse": reason[:500]}, use_bin_type=True)


def frame_message(packet: Packet, fps: float, redundant: tuple[tuple[PacketType, bytes], ...] = ()) -> bytes:
    """One frame message: the packet exactly as in a .sgnc file, or, with redundancy, fixarray(6) whose sixth
    element lists the redundant ``[type, payload]`` pairs (newest first)."""
    data = pack(packet, fps)
    if not redundant:
        return data
    assert data[0] == PACKET_ARRAY and len(redundant) <= MAX_REDUNDANCY
    return bytes([FRAME_ARRAY]) + data[1:] + msgpack.packb([[int(t), p] for t, p in redundant], use_bin_type=True)


def _control(data: bytes) -> Hello | HelloAck | Estimate | Nack | Retransmission:
    try:
        m = msgpack.unpackb(data, raw=False, max_bin_len=MAX_PAYLOAD, max_str_len=512, max_array_len=RTX_HISTORY,
                            max_map_len=16)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError):
        raise BitstreamError("malformed control message") from None
    if not isinstance(m, dict):
        raise BitstreamError("malformed control message")
    if "refuse" in m:
        raise RefusedError(f"the other side refused the call: {str(m['refuse'])[:200]}")
    if m.get("sganc") != PROTOCOL_VERSION:
        raise IncompatibleError(f"the other side speaks call protocol {str(m.get('sganc'))[:20]}, this side "
                                f"{PROTOCOL_VERSION}: update one of them")
    if "ack" in m:
        if type(m["ack"]) is not int:
            raise BitstreamError("malformed hello acknowledgement")
        return HelloAck(m["ack"])
    if "fb" in m:
        return _feedback(m)
    if "nack" in m:
        return _nack(m)
    if "rtx" in m and "model_id" not in m:
        return _retransmission(m)
    model_id, epoch = m.get("model_id"), m.get("epoch_ms")
    if not isinstance(model_id, bytes) or len(model_id) != 32 or type(epoch) is not int:
        raise BitstreamError("malformed hello message")
    stream = None if m.get("stream") is None else hello_stream_header(m["stream"])
    if stream is not None and stream.model_id != model_id.hex():
        raise BitstreamError("malformed hello message: stream header names another model")
    return Hello(model_id.hex(), stream, epoch, m.get("feedback") is True, m.get("rtx") is True)


def hello_stream_header(m: object) -> StreamHeader:
    """A hello's stream header map (SPEC.md §8.4). The hello carries no version byte: the map's fields tell it, as
    §2 adds them: ``steps`` → bitstream v4 (rate control), ``residual`` without ``steps`` → v3, neither → v2.
    BitstreamError for a malformed map."""
    keys = m.keys() if isinstance(m, dict) else ()
    version = VERSION_RATE if "steps" in keys else VERSION_RESIDUAL if "residual" in keys else VERSION
    return StreamHeader.from_map(m, version)


def _frame_entries(obj: object, most: int, what: str) -> tuple[tuple[PacketType, bytes], ...]:
    """A list of 1 to ``most`` ``[type, payload]`` frame packets (redundancy, or a retransmission)."""
    if not isinstance(obj, (list, tuple)) or not 1 <= len(obj) <= most:
        raise BitstreamError(f"malformed {what}: not a list of 1-{most} entries of [type, payload]")
    out = []
    for entry in obj:
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or type(entry[0]) is not int
                or not isinstance(entry[1], bytes) or len(entry[1]) > MAX_PAYLOAD):
            raise BitstreamError(f"malformed {what}: an entry is not [type, payload]")
        try:
            ptype = PacketType(entry[0])
        except ValueError:
            raise BitstreamError(f"malformed {what}: unknown packet type {entry[0]}") from None
        if not ptype.is_frame:
            raise BitstreamError(f"malformed {what}: an entry is not a frame")
        out.append((ptype, entry[1]))
    return tuple(out)


Message = Hello | HelloAck | Estimate | Nack | Retransmission | Packet | FrameMessage | Late


def parse_message(data: bytes, reader: PacketReader | None) -> Message:
    """One data-channel message.

    A keyframe request comes back as a :class:`Packet` (it numbers packets of *our* stream, so it is parsed apart
    and never moves ``reader``, which unwraps the other stream's 8-bit sequence numbers); a packet of the other
    side's stream as a :class:`FrameMessage` (needs ``reader``: the stream announced by its hello); a compact
    packet at or behind the last one read as :class:`Late` (with its message placed behind it, for a repair it may
    fill), without moving ``reader``; a feedback message about our
    stream as an :class:`~sganc_stream.rtc.congestion.Estimate`, a NACK of our stream as a :class:`Nack`, the
    other side's answer to ours as a :class:`Retransmission`. Raises RefusedError for a refusal,
    IncompatibleError for another protocol version, MalformedFeedback for a malformed feedback message or NACK,
    BitstreamError for anything else malformed.
    """
    if not isinstance(data, bytes) or not data:
        raise BitstreamError("malformed message: text or nothing on the packet channel")
    if 0x80 <= data[0] <= 0x8F:
        return _control(data)
    if data[:2] == CONTROL_PREFIX:
        return PacketReader(1.0).unpack(data)
    if data[0] not in (PACKET_ARRAY, FRAME_ARRAY):
        raise BitstreamError("malformed message: neither a control map nor a packet")
    if reader is None:
        raise BitstreamError("packet before the other side's hello")
    try:
        obj = msgpack.unpackb(data, raw=False, max_bin_len=MAX_PAYLOAD, max_str_len=0, max_map_len=0,
                              max_array_len=max(6, MAX_REDUNDANCY))
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError) as exc:
        raise BitstreamError(f"malformed packet ({type(exc).__name__})") from None
    if not isinstance(obj, (list, tuple)) or len(obj) not in (5, 6):
        raise BitstreamError("malformed packet: not a 5-field record")
    redundant = _frame_entries(obj[5], MAX_REDUNDANCY, "frame message") if len(obj) == 6 else ()
    fields = obj[:5]
    late = None
    if (type(fields[0]) is int and fields[0] in (int(t) for t in COMPACT) and type(fields[1]) is int
            and 0 <= fields[1] < SEQ_MODULUS and reader.last_seq is not None):
        ahead = (fields[1] - reader.last_seq) % SEQ_MODULUS
        if ahead == 0 or ahead > SEQ_MODULUS // 2:
            late = _behind(reader, fields, redundant)
            if late.message is None:
                return late
    msg = late.message if late is not None else FrameMessage(reader.from_fields(fields), redundant)
    if redundant and (not msg.packet.type.is_frame or msg.packet.seq < len(redundant)):
        raise BitstreamError("malformed frame message: redundancy on a packet that cannot have predecessors")
    return late if late is not None else msg


def check_models(ours: str, theirs: str) -> None:
    """One clear line when the two sides would code with different models."""
    if ours != theirs:
        raise ModelMismatchError(f"model mismatch: the other side uses model {theirs[:12]}…, this side {ours[:12]}… "
                                 "(both sides must load the same model)")


class Handshake:
    """The hello exchange of one connection: ours repeated until acknowledged, theirs awaited.

    ``due()`` gives our hello whenever it should go (again); ``on_hello``/``on_ack`` take the other side's
    messages; ``failure()`` says, once, why the exchange failed (no hello, or no acknowledgement, within
    ``timeout_s`` of the channel opening).
    """

    def __init__(self, ours: Hello, *, retry_s: float = HELLO_RETRY_S, timeout_s: float = HELLO_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ours = ours
        self.retry_s, self.timeout_s, self.clock = retry_s, timeout_s, clock
        self.started = clock()
        self.theirs: Hello | None = None
        self.acked = False
        self.sent = 0
        self._last_sent = float("-inf")

    @property
    def established(self) -> bool:
        return self.acked and self.theirs is not None

    def due(self) -> bytes | None:
        """Our hello, when it is unacknowledged and ``retry_s`` has passed since it last went out."""
        now = self.clock()
        if self.acked or now - self._last_sent < self.retry_s:
            return None
        self._last_sent = now
        self.sent += 1
        return self.ours.to_bytes()

    def on_hello(self, theirs: Hello) -> bool:
        """Take the other side's hello; True the first time (a repeat is only acknowledged again)."""
        first = self.theirs is None
        if first:
            self.theirs = theirs
        return first

    def on_ack(self, ack: HelloAck) -> None:
        if ack.epoch_ms == self.ours.epoch_ms:
            self.acked = True

    def failure(self) -> str | None:
        if self.established or self.clock() - self.started < self.timeout_s:
            return None
        if self.theirs is None:
            return (f"the other side sent no hello within {self.timeout_s:g} s of the data channel opening "
                    f"(not an sganc call peer of protocol {PROTOCOL_VERSION}?)")
        return f"the other side did not acknowledge this side's hello within {self.timeout_s:g} s"


class Redundancy:
    """Sender side of loss repair. In-band redundancy (as RTP redundancy, RFC 2198, and Opus in-band FEC): each
    frame message also carries the previous ``depth`` frame packets of the stream, newest first, never reaching past
    the last intra frame (older packets are of no use to a decoder), and, with ``fit``, only as many as fit without
    adding an SCTP DATA chunk (``rtc.wire``): redundancy then never costs a datagram. Retransmission (SPEC §8.7, as
    RTP retransmission, RFC 4588): the last ``RTX_HISTORY`` frame packets since the last intra frame, sent again
    when a receiver NACKs them (:meth:`retransmission`).
    """

    def __init__(self, depth: int = DEFAULT_REDUNDANCY, fit: bool = True) -> None:
        if not 0 <= depth <= MAX_REDUNDANCY:
            raise SgancError(f"redundancy depth must be in 0..{MAX_REDUNDANCY}, got {depth}")
        self.depth, self.fit = depth, fit
        self.history: deque[tuple[PacketType, bytes]] = deque(maxlen=max(depth, 1))
        self.sent: deque[tuple[PacketType, bytes]] = deque(maxlen=RTX_HISTORY)  # seqs next_seq - len(sent) … - 1
        self.intra_bytes: int | None = None  # message bytes of the last intra frame
        self.carried = 0  # redundant packets sent
        self.next_seq = 0

    def message(self, packet: Packet, fps: float, limit: int = 0) -> bytes:
        """The frame message for ``packet`` (the next packet of the stream), carrying redundancy only within
        ``limit`` bytes (the other side's max message size; 0 = no limit)."""
        if not packet.type.is_frame:
            return pack(packet, fps)
        if packet.seq != self.next_seq:  # the stream restarted or skipped: earlier packets are not its predecessors
            self.history.clear()
            self.sent.clear()
        entries: list[tuple[PacketType, bytes]] = []
        if not packet.type.is_intra and self.depth:
            base = pack(packet, fps)
            for entry in reversed(self.history):
                trial = frame_message(packet, fps, (*entries, entry))
                if (self.fit and sctp_chunks(len(trial)) > sctp_chunks(len(base))) or (limit and len(trial) > limit):
                    break
                entries.append(entry)
        if packet.type.is_intra:
            self.history.clear()
            self.sent.clear()
            self.intra_bytes = len(pack(packet, fps))
        self.history.append((packet.type, packet.payload))
        self.sent.append((packet.type, packet.payload))
        self.next_seq = packet.seq + 1
        self.carried += len(entries)
        return frame_message(packet, fps, tuple(entries))

    def superseded(self, nack: Nack) -> bool:
        """An intra frame newer than every packet ``nack`` names has been sent: the receiver resynchronises on it
        (if it is lost too, the receiver's keyframe request comes next), so the NACK needs no answer."""
        return bool(self.sent) and self.sent[0][0].is_intra and nack.last < self.next_seq - len(self.sent)

    def retransmission(self, nack: Nack, limit: int = 0) -> bytes | None:
        """The answer to ``nack``: the packets it names, from the oldest one kept if that is the last intra frame
        (a decoder resynchronises there), within ``limit`` bytes (0 = no limit). None when they are not all kept
        (older than the last intra frame and not covered by it, beyond ``RTX_HISTORY``, or not sent yet), would
        not fit, or would take more bytes than the last intra frame did (a long gap: an intra frame repairs it
        for less): the sender then answers with an intra frame, as to a keyframe request."""
        oldest = self.next_seq - len(self.sent)
        if nack.last >= self.next_seq or nack.last < oldest:
            return None
        first = nack.first
        if first < oldest:
            if not self.sent[0][0].is_intra:
                return None
            first = oldest
        data = Retransmission(first, tuple(self.sent[s - oldest] for s in range(first, nack.last + 1))).to_bytes()
        if (limit and len(data) > limit) or (self.intra_bytes is not None and len(data) > self.intra_bytes):
            return None
        return data


@dataclass
class Delivery:
    """What the decoder applies for one frame message, in order, and the frame it then shows."""

    steps: list[tuple[PacketType, bytes]]  # oldest first; the message's own packet last; none for a no-face packet
    packet: Packet  # the packet shown: a face packet, or a no-face packet (show "no face", not the last face)
    capture_ms: float  # sender's wall-clock capture time of ``packet``
    size: int  # message bytes
    recovered: int  # frames restored from redundancy (their state applied, not shown)
    recovered_ms: float | None  # ended a loss that needed a keyframe: ms from detecting it to this frame
    sync_id: int  # the receiver's resynchronisation count when this was made
    repaired_ms: float | None = None  # ended a gap repaired by retransmission: ms from detecting it to this frame


@dataclass
class _Repair:
    """A gap waiting for a retransmission: the packets held since (by sequence number) and the newest message."""

    expected: int  # the first sequence number missing
    since_ms: float
    newest: FrameMessage  # the newest frame message held: shown when the gap is repaired
    size: int  # its bytes
    held: dict[int, tuple[PacketType, bytes]] = field(default_factory=dict)
    nacks: int = 0
    last_nack_ms: float = -1e18

    def hold(self, msg: FrameMessage, size: int) -> None:
        seq = msg.packet.seq
        self.held[seq] = (msg.packet.type, msg.packet.payload)
        for k, entry in enumerate(msg.redundant, 1):
            if seq - k >= self.expected:
                self.held.setdefault(seq - k, entry)
        if seq > self.newest.packet.seq:
            self.newest, self.size = msg, size

    def chain(self) -> int:
        """Where the decodable chain starts: the newest intra frame held, else the first sequence number missing."""
        intra = [s for s, (t, _) in self.held.items() if t.is_intra and s <= self.newest.packet.seq]
        return max(intra, default=self.expected)

    def missing(self) -> tuple[int, int]:
        """The first and last sequence numbers still needed (the range a NACK names)."""
        first = self.chain()
        while first in self.held:
            first += 1
        return first, self.newest.packet.seq - 1


class StreamReceiver:
    """Incoming side of one stream, on the event loop: sequence bookkeeping, redundancy, keyframe requests.

    Decoding itself happens elsewhere (a worker applies each :class:`Delivery`); a decode failure comes back
    through :meth:`on_undecodable`. Gaps are bridged from the redundancy a later message carries. A gap wider than
    that, when the sender's hello offers retransmission, is repaired by one: the receiver holds the messages that
    follow, NACKs the missing packets (:meth:`nack_due`) up to ``NACK_TRIES`` times, and shows the newest held
    frame once the chain is whole. A gap that retransmission does not repair, a decode failure, or an inter packet
    before any intra frame makes the receiver unsynchronised: it asks for a keyframe at once and every ``retry_ms``
    while it stays so (a request can be lost too).
    """

    def __init__(self, hello: Hello, *, retry_ms: float = KEYFRAME_RETRY_MS,
                 clock: Callable[[], float] = time.time) -> None:
        assert hello.stream is not None
        self.hello = hello
        self.repair: _Repair | None = None  # a gap waiting for a retransmission (only when hello.rtx)
        self.repaired = 0  # gaps repaired by retransmission
        self.rtt_ms: float | None = None  # smoothed NACK → retransmission time
        self.reader = PacketReader(hello.stream.fps)
        self.reader.last_seq = -1  # every stream of a call starts at sequence number 0: an inter packet can be placed
        self.retry_ms, self.clock = retry_ms, clock
        self.synced = False
        self.sync_id = 0
        self.expected: int | None = None  # next sequence number when in sync
        self.first_seq: int | None = None
        self.highest_seq: int | None = None
        self.frames = 0  # frame packets whose state was applied (shown or restored)
        self.recovered = 0  # ... of which restored from redundancy
        self.late = 0
        self.no_face = 0  # no-face packets taken (each shown as "no face")
        self.ended = False
        self.gaps = 0  # losses that needed a keyframe
        self.lost_since_ms: float | None = None  # wall ms when sync was lost (None: in sync or never synced)
        self._last_request_ms = -1e18
        self._late_run = 0

    @property
    def lost(self) -> int:
        """Frame packets of the sequence seen so far whose state never reached the decoder."""
        if self.first_seq is None or self.highest_seq is None:
            return 0
        return max(self.highest_seq - self.first_seq + 1 - self.frames, 0)

    def _desync(self, now_ms: float) -> None:
        """Out of sync: wait for a keyframe. A gap waiting for a retransmission counts from when it was found."""
        if self.synced or self.repair is not None:
            self.gaps += 1
            self.lost_since_ms = now_ms if self.repair is None else self.repair.since_ms
        self.repair = None
        self.synced = False
        self.sync_id += 1

    def _nack_retry_ms(self) -> float:
        return self.retry_ms if self.rtt_ms is None else min(max(2 * self.rtt_ms, NACK_RETRY_MIN_MS), self.retry_ms)

    def nack_due(self) -> Nack | None:
        """The NACK to send now for a gap waiting for a retransmission (at once, then after twice the measured
        round trip, ``NACK_TRIES`` in all), or None."""
        r, now = self.repair, self.clock() * 1000
        if r is None or self.ended or r.nacks >= NACK_TRIES or now - r.last_nack_ms < self._nack_retry_ms():
            return None
        r.nacks += 1
        r.last_nack_ms = now
        return Nack(*r.missing())

    def want_keyframe(self) -> bool:
        """True when a keyframe request should go out now (out of sync, and none sent within ``retry_ms``). A gap
        waiting for a retransmission falls back to keyframe requests when its last NACK went unanswered."""
        now = self.clock() * 1000
        r = self.repair
        if r is not None:
            if r.nacks < NACK_TRIES or now - r.last_nack_ms < self._nack_retry_ms():
                return False
            self._desync(now)  # give up: the gap needs a keyframe
        if self.synced or self.ended or now - self._last_request_ms < self.retry_ms:
            return False
        self._last_request_ms = now
        return True

    def keyframe_request(self) -> bytes:
        seq = 0 if self.expected is None else self.expected
        return pack(Packet(PacketType.KEYFRAME_REQUEST, seq, 0, 0), self.hello.stream.fps)  # type: ignore[union-attr]

    def on_late(self) -> None:
        """A :class:`Late` message. A run of them means the 8-bit sequence numbers lost their anchor (an outage of
        more than 128 packets): resynchronise through a keyframe, whose absolute sequence number re-anchors them."""
        self.late += 1
        self._late_run += 1
        if self._late_run >= LATE_RUN_RESYNC:
            self._late_run = 0
            self._desync(self.clock() * 1000)

    def on_late_message(self, late: Late, size: int) -> Delivery | None:
        """A :class:`Late` message: counted late (:meth:`on_late`), unless it was reordered, not lost, and belongs to
        the gap a repair waits for (its packet not older than the gap): then it is held as a retransmission would be
        (with its redundant entries), and the delivery that ends the repair comes back when the chain is whole."""
        r, msg = self.repair, late.message
        if r is not None and msg is not None and msg.packet.seq >= r.expected and msg.packet.type.is_frame:
            self._late_run = 0
            r.hold(msg, size)
            return self._repaired(self.clock() * 1000)
        self.on_late()
        return None

    def on_message(self, msg: FrameMessage, size: int) -> Delivery | None:
        """A message of this stream; the delivery to decode, or None when it cannot be used."""
        now_ms = self.clock() * 1000
        packet = msg.packet
        if packet.type == PacketType.END:
            self.ended = True
            return None
        if packet.type == PacketType.NO_FACE:
            return self._no_face(packet, size, now_ms)
        if not packet.type.is_frame:
            return None
        if self.repair is not None and not packet.type.is_intra:
            if packet.seq < self.repair.expected:
                self.on_late()
                return None
            self._late_run = 0
            self.highest_seq = max(self.highest_seq or 0, packet.seq)
            self.repair.hold(msg, size)
            return self._repaired(now_ms)
        if self.synced and self.expected is not None and packet.seq < self.expected:
            self.on_late()
            return None
        self._late_run = 0
        self.highest_seq = packet.seq if self.highest_seq is None else max(self.highest_seq, packet.seq)
        primary = (packet.type, packet.payload)
        redundant = msg.redundant
        if packet.type.is_intra or (self.synced and packet.seq == self.expected):
            steps, restored = [primary], 0
        elif self.synced and self.expected is not None and packet.seq - self.expected <= len(redundant):
            restored = packet.seq - self.expected
            steps = [*reversed(redundant[:restored]), primary]
        else:
            intra = [k for k, (t, _) in enumerate(redundant) if t.is_intra]
            if not intra and self.hello.rtx and self.synced and self.expected is not None:
                self.synced = False  # the gap cannot be bridged: NACK it, hold what follows
                self.repair = _Repair(self.expected, now_ms, msg, size)
                self.repair.hold(msg, size)
                return None
            if not intra:  # the gap cannot be bridged: wait for a keyframe
                self._desync(now_ms)
                return None
            restored = intra[0] + 1
            steps = [*reversed(redundant[:restored]), primary]
        if not self.synced:
            self.sync_id += 1
        if self.repair is not None:  # an intra frame ended the repair: the gap needed a keyframe after all
            self.gaps += 1
            self.lost_since_ms, self.repair = self.repair.since_ms, None
        first = packet.seq - restored
        self.first_seq = first if self.first_seq is None else min(self.first_seq, first)
        self.synced, self.expected = True, packet.seq + 1
        self.frames += 1 + restored
        self.recovered += restored
        recovered_ms = None if self.lost_since_ms is None else now_ms - self.lost_since_ms
        self.lost_since_ms = None
        return Delivery(steps, packet, self.hello.epoch_ms + packet.timestamp_ms, size, restored, recovered_ms,
                        self.sync_id)

    def on_retransmission(self, rtx: Retransmission) -> Delivery | None:
        """The answer to a NACK: the delivery that repairs the gap (the packets missing and those held since, the
        newest shown), or None (no repair waiting, or the chain is still not whole)."""
        r, now_ms = self.repair, self.clock() * 1000
        if r is None:
            return None
        if r.nacks:
            sample = now_ms - r.last_nack_ms
            self.rtt_ms = sample if self.rtt_ms is None else 0.875 * self.rtt_ms + 0.125 * sample  # RFC 6298's gain
        for k, entry in enumerate(rtx.packets):
            if rtx.first + k >= r.expected:
                r.held.setdefault(rtx.first + k, entry)
        return self._repaired(now_ms)

    def _repaired(self, now_ms: float) -> Delivery | None:
        """The delivery that ends the repair, once the held packets chain from the gap (or an intra frame) to the
        newest message; None before."""
        r = self.repair
        assert r is not None
        start, top = r.chain(), r.newest.packet.seq
        if any(s not in r.held for s in range(start, top + 1)):
            return None
        steps = [r.held[s] for s in range(start, top + 1)]
        self.repair = None
        self.synced, self.expected = True, top + 1
        self.first_seq = start if self.first_seq is None else min(self.first_seq, start)
        self.frames += len(steps)
        self.recovered += len(steps) - 1
        self.repaired += 1
        packet = r.newest.packet
        return Delivery(steps, packet, self.hello.epoch_ms + packet.timestamp_ms, r.size, len(steps) - 1, None,
                        self.sync_id, repaired_ms=now_ms - r.since_ms)

    def _no_face(self, packet: Packet, size: int, now_ms: float) -> Delivery | None:
        """A no-face packet: the delivery that shows "no face" (no steps: the decoder's state stays), or None when
        it is late. Its sequence number is the next face packet's, so it also tells of face packets lost before it:
        then the receiver is out of sync at once (and asks for a keyframe, which the sender codes when the face is
        back) instead of finding out from the face's return a round trip too late. A repair in progress is given up
        for a keyframe (the face it would complete is gone)."""
        if self.repair is not None:
            self._desync(now_ms)
        if self.synced and self.expected is not None:
            if packet.seq < self.expected:  # a face packet after it already arrived
                self.on_late()
                return None
            if packet.seq > self.expected:
                self._desync(now_ms)
        elif self.expected is None and packet.seq == 0:  # the stream starts without a face: nothing missed yet
            self.synced, self.expected = True, 0
            self.sync_id += 1
        self._late_run = 0
        if packet.seq > 0:
            self.highest_seq = packet.seq - 1 if self.highest_seq is None else max(self.highest_seq, packet.seq - 1)
        self.no_face += 1
        return Delivery([], packet, self.hello.epoch_ms + packet.timestamp_ms, size, 0, None, self.sync_id)

    def on_undecodable(self, sync_id: int | None = None) -> None:
        """A message did not decode (malformed, or its payload failed in the decoder); ``sync_id`` of the delivery
        that failed: a failure from before the last resynchronisation is ignored."""
        if sync_id is None or sync_id == self.sync_id:
            self._desync(self.clock() * 1000)


class Pacer:
    """Skip frames while the channel has more than ``max_buffered`` bytes waiting (never let latency grow).

    aiortc hands a data-channel message to SCTP only when SCTP's own queue is empty, so bytes waiting in the channel
    (``bufferedAmount``) mean SCTP's congestion window is full. The threshold allows ``threshold / path rate`` seconds
    of queueing: the default 2 KiB is about 0.3 s at the default model's 60 kbit/s (8 KiB, the earlier default, was
    1 s). It cannot see a queue inside the network: through a bottleneck narrower than the stream, aiortc's SCTP
    (unreliable messages, no retransmissions) keeps sending faster than the bottleneck; the receiver's delay-based
    estimate (``rtc.congestion``, in feedback messages) is what keeps the stream within the path's rate."""

    def __init__(self, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        if max_buffered < 0:
            raise SgancError(f"max buffered bytes must be non-negative, got {max_buffered}")
        self.max_buffered = max_buffered
        self.skipped = 0

    def may_send(self, buffered_amount: int) -> bool:
        if buffered_amount > self.max_buffered:
            self.skipped += 1
            return False
        return True


def restamp(packet: Packet, frame: int, timestamp_ms: int) -> Packet:
    """The encoder's packet with the camera's frame slot and capture time (ms since the hello's epoch).

    The camera slot keeps ``frame - seq`` and ``ts - nominal(frame)`` small on the wire even when frames are
    skipped, so inter packets keep their compact framing.
    """
    return replace(packet, frame=max(frame, packet.seq), timestamp_ms=timestamp_ms)
