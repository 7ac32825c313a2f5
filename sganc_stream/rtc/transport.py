"""The data-channel protocol of a live call: channel choice, handshake, pacing, loss handling, wire cost.

Channel: one data channel per call, created on both sides with ``negotiated=True, id=0`` (no in-band
announcement to wait for), ``ordered=False, maxRetransmits=0``. Why unreliable and unordered: a frame is worth
showing only when it arrives on time, and an inter frame is useless without every frame before it, so a lost
packet is repaired by a keyframe request (one intra frame) rather than by retransmission. Retransmits would add
at least a round trip to every loss and, ordered, hold back all later frames behind it (head-of-line blocking),
so latency would grow with loss; unreliable-unordered keeps latency at one path delay whatever the loss.

Messages are binary msgpack: a frame or control packet is the bitstream's 5-field array (``pack``), exactly as
in a .sgnc file, one packet per message; the handshake is a msgpack map. On open each side sends
``{"sganc": 1, "model_id": bytes, "stream": StreamHeader.to_map() | None, "epoch_ms": int}`` (``stream`` is None
for a side that only receives). A side whose model differs from the other's refuses with
``{"refuse": reason}`` and both sides report one line. ``epoch_ms`` is the sender's wall clock (ms) at
timestamp 0 of its packets: both peers of a loopback test or benchmark read the same ``time.time()``, so
capture-to-display latency is ``now - (epoch_ms + packet.timestamp_ms)``; across machines it also includes
their clock offset.

Loss: the receiver tracks sequence numbers (:class:`PacketReader` unwraps the 8-bit ones of inter packets). A
gap, an undecodable packet, or an inter packet before any intra frame makes it drop its state and send a
KEYFRAME_REQUEST packet, repeated every ``retry_ms`` while it stays out of sync (the request can be lost too);
the sender answers with an intra frame.

No face: while the sender's camera shows no face it sends a no-face packet (bitstream v2) when the face goes and
then once a second, nothing in between; the receiver shows a black frame ("no face") until the next face packet.
A no-face packet carries the sequence number the next face packet will have, so it also reveals lost face packets.

Message size: SCTP peers announce the largest message they accept (SDP ``a=max-message-size``, RFC 8841: 64 KiB
when absent, 0 for no limit); aiortc raises inside ``send`` above it. The sender checks every packet against the
other side's announced size first and does not send one above it (a large model's intra frame with out-of-range
latents can reach ~50 KB): it is counted and logged, and the receiver repairs the gap with a keyframe request.

Pacing: the sender checks ``bufferedAmount`` before encoding a frame and skips the frame (no sequence number
used, so nothing for the receiver to repair) while more than ``max_buffered`` bytes wait: frames are dropped,
latency never grows.

Wire cost per message of ``n`` bytes (documented estimate, one DATA chunk per SCTP packet, no bundling):
``chunk = 16 + pad4(n)`` (SCTP DATA chunk header, payload padded to 4 bytes: the data channel's framing), and
``wire = chunk + 12 (SCTP common header) + 13 + 8 + 16 (DTLS 1.2 record header, AES-GCM explicit nonce and tag)
+ 8 (UDP) + 20 (IPv4) = chunk + 77``. SACKs, ICE consent checks and heartbeats are not counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import numpy as np

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.bitstream.packet import MAX_PAYLOAD, Packet, PacketReader, PacketType, pack
from sganc_stream.errors import BitstreamError, ModelMismatchError, SgancError

PROTOCOL_VERSION = 2  # call protocol 2 carries bitstream v2 packets (check values, no-face, new-face)
CHANNEL_LABEL = "sganc"
CHANNEL_OPTIONS: dict[str, Any] = {"ordered": False, "maxRetransmits": 0, "negotiated": True, "id": 0}
SCTP_CHUNK_HEADER = 16
PACKET_OVERHEAD = 12 + 13 + 8 + 16 + 8 + 20  # SCTP common header, DTLS record (AES-GCM), UDP, IPv4
MAX_MESSAGE = MAX_PAYLOAD + 64
DEFAULT_MAX_BUFFERED = 8 * 1024
DEFAULT_PEER_MAX_MESSAGE = 65536  # RFC 8841 §6: the max-message-size to assume when the SDP names none
NO_FACE_REPEAT_S = 1.0  # while no face is in view, repeat the no-face packet this often
CONTROL_PREFIX = bytes([0x95, int(PacketType.KEYFRAME_REQUEST)])  # msgpack fixarray(5), then the packet type


def chunk_bytes(n: int) -> int:
    """Bytes of the SCTP DATA chunk that carries an ``n``-byte message (the data channel's framing)."""
    return SCTP_CHUNK_HEADER + (n + 3) // 4 * 4


def wire_bytes(n: int) -> int:
    """Estimated bytes on the wire (IPv4/UDP/DTLS/SCTP) for one ``n``-byte message; see the module doc."""
    return chunk_bytes(n) + PACKET_OVERHEAD


class RefusedError(SgancError):
    """The call was refused: the peers' models differ, or the other side sent a refusal."""


class MessageTooLarge(SgancError):
    """A packet is larger than the other side accepts (its SDP max-message-size)."""


def peer_max_message(sdp: str) -> int:
    """The largest message (bytes) the side that wrote ``sdp`` accepts on its data channel (RFC 8841
    ``a=max-message-size`` of its application section; 65536 when absent; 0 means no limit)."""
    for line in sdp.splitlines():
        if line.startswith("a=max-message-size:"):
            value = line.split(":", 1)[1].strip()
            if value.isdigit():
                return int(value)
    return DEFAULT_PEER_MAX_MESSAGE


def check_message_size(n: int, limit: int) -> None:
    """MessageTooLarge when an ``n``-byte message exceeds ``limit`` (0 = no limit)."""
    if limit and n > limit:
        raise MessageTooLarge(f"a {n}-byte packet exceeds the other side's max message size ({limit} bytes)")


@dataclass(frozen=True)
class Hello:
    """What each side announces when the channel opens."""

    model_id: str  # hex
    stream: StreamHeader | None  # None: this side only receives
    epoch_ms: int

    def to_bytes(self) -> bytes:
        return msgpack.packb({"sganc": PROTOCOL_VERSION, "model_id": bytes.fromhex(self.model_id),
                              "stream": None if self.stream is None else self.stream.to_map(),
                              "epoch_ms": self.epoch_ms}, use_bin_type=True)


def refusal(reason: str) -> bytes:
    return msgpack.packb({"refuse": reason}, use_bin_type=True)


def parse_message(data: bytes, reader: PacketReader | None) -> Packet | Hello:
    """One data-channel message: a packet (needs the current stream's reader) or a handshake map.

    Raises RefusedError for a refusal from the other side and BitstreamError for anything malformed.
    """
    if not isinstance(data, bytes):
        raise BitstreamError("malformed message: text on the packet channel")
    if data[:1] and 0x80 <= data[0] <= 0x8F:  # msgpack fixmap: a control map
        try:
            m = msgpack.unpackb(data, raw=False, max_bin_len=64, max_str_len=512, max_array_len=16, max_map_len=16)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise BitstreamError("malformed control message") from None
        if "refuse" in m:
            raise RefusedError(f"the other side refused the call: {str(m['refuse'])[:200]}")
        if m.get("sganc") != PROTOCOL_VERSION:
            raise RefusedError(f"the other side speaks call protocol {m.get('sganc')!r}, this side {PROTOCOL_VERSION}")
        model_id, epoch = m.get("model_id"), m.get("epoch_ms")
        if not isinstance(model_id, bytes) or len(model_id) != 32 or type(epoch) is not int:
            raise BitstreamError("malformed hello message")
        stream = None if m.get("stream") is None else StreamHeader.from_map(m["stream"])
        if stream is not None and stream.model_id != model_id.hex():
            raise BitstreamError("malformed hello message: stream header names another model")
        return Hello(model_id.hex(), stream, epoch)
    if data[:2] == CONTROL_PREFIX:
        # A keyframe request numbers packets of *our* stream: parse it apart, so that it cannot move the
        # other stream's reader (which unwraps that stream's 8-bit sequence numbers from its last one).
        return PacketReader(1.0).unpack(data)
    if reader is None:
        raise BitstreamError("packet before the other side's hello")
    return reader.unpack(data)


def check_models(ours: str, theirs: str) -> None:
    """One clear line when the two sides would code with different models."""
    if ours != theirs:
        raise ModelMismatchError(f"model mismatch: the other side uses model {theirs[:12]}…, this side {ours[:12]}… "
                                 "(both sides must load the same model)")


class LossInjector:
    """Drops incoming messages with probability ``p`` (seeded, so a test or benchmark run repeats exactly)."""

    def __init__(self, p: float, seed: int = 0) -> None:
        if not 0.0 <= p < 1.0:
            raise SgancError(f"loss probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = random.Random(seed)
        self.dropped = 0

    def drop(self) -> bool:
        if self.p and self.rng.random() < self.p:
            self.dropped += 1
            return True
        return False


class LatentDecoder(Protocol):
    """What the receiver needs from the pipeline's FrameDecoder."""

    def latents(self, packet: Packet) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass
class Received:
    """A frame packet that decoded to latents, or a no-face packet."""

    packet: Packet
    latents: np.ndarray | None  # (rows, width); None for a no-face packet
    capture_ms: float  # sender's wall-clock capture time
    size: int  # message bytes
    recovered_ms: float | None  # an intra frame that ended a loss: ms from detecting the loss to this frame


class StreamReceiver:
    """Incoming side of one stream: unwrap, detect gaps, decode latents, decide on keyframe requests."""

    def __init__(self, hello: Hello, decoder: LatentDecoder, *, retry_ms: float = 200.0,
                 clock: Callable[[], float] = time.time) -> None:
        assert hello.stream is not None
        self.hello, self.decoder = hello, decoder
        self.reader = PacketReader(hello.stream.fps)
        self.retry_ms, self.clock = retry_ms, clock
        self.synced = False
        self.expected: int | None = None  # next sequence number when in sync
        self.first_seq: int | None = None
        self.highest_seq: int | None = None
        self.frames = 0  # frame packets decoded
        self.bytes = 0
        self.ended = False
        self.gaps = 0
        self.lost_since_ms: float | None = None  # wall ms when sync was lost (None: in sync or never synced)
        self._last_request_ms = -1e18

    @property
    def lost(self) -> int:
        """Frame packets missing from the sequence seen so far (sent by the peer, never decoded here)."""
        if self.first_seq is None or self.highest_seq is None:
            return 0
        return max(self.highest_seq - self.first_seq + 1 - self.frames, 0)

    def _desync(self, now_ms: float) -> None:
        if self.synced:
            self.gaps += 1
            self.lost_since_ms = now_ms
        self.synced = False
        self.decoder.reset()

    def want_keyframe(self) -> bool:
        """True when a keyframe request should go out now (out of sync, and none sent within ``retry_ms``)."""
        now = self.clock() * 1000
        if self.synced or self.ended or now - self._last_request_ms < self.retry_ms:
            return False
        self._last_request_ms = now
        return True

    def keyframe_request(self) -> bytes:
        seq = 0 if self.expected is None else self.expected
        return pack(Packet(PacketType.KEYFRAME_REQUEST, seq, 0, 0), self.hello.stream.fps)  # type: ignore[union-attr]

    def on_packet(self, packet: Packet, size: int) -> Received | None:
        """A frame packet of this stream; returns its latents when it decoded, None when it cannot be used."""
        now_ms = self.clock() * 1000
        if packet.type == PacketType.END:
            self.ended = True
            return None
        if packet.type == PacketType.NO_FACE:
            if self.synced and packet.seq != self.expected:  # face packets before it were lost
                self._desync(now_ms)
            return Received(packet, None, self.hello.epoch_ms + packet.timestamp_ms, size, None)
        if not packet.type.is_frame:
            return None
        self.highest_seq = packet.seq if self.highest_seq is None else max(self.highest_seq, packet.seq)
        if not packet.type.is_intra and (not self.synced or packet.seq != self.expected):
            self._desync(now_ms)
            return None
        try:
            latents = self.decoder.latents(packet)
        except BitstreamError:
            self._desync(now_ms)
            return None
        self.first_seq = packet.seq if self.first_seq is None else min(self.first_seq, packet.seq)
        self.synced, self.expected = True, packet.seq + 1
        self.frames += 1
        self.bytes += size
        recovered = None if self.lost_since_ms is None else now_ms - self.lost_since_ms
        self.lost_since_ms = None
        return Received(packet, latents, self.hello.epoch_ms + packet.timestamp_ms, size, recovered)

    def on_undecodable(self) -> None:
        """A message that did not parse as a packet of this stream (e.g. inter before any intra)."""
        self._desync(self.clock() * 1000)


class Pacer:
    """Skip frames while the channel has more than ``max_buffered`` bytes waiting (never let latency grow)."""

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
    return Packet(packet.type, packet.seq, max(frame, packet.seq), timestamp_ms, packet.payload)
