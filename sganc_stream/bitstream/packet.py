"""Packets: the unit that travels in .sgnc files and over the data channel.

On the wire a packet is one msgpack array ``[type, seq, frame, ts, payload]``. Intra, no-face and control
packets carry absolute ``seq`` and ``frame``; inter packets carry ``seq mod 256`` and ``frame - seq`` so their
framing stays within 8 bytes; ``ts`` is the capture time in ms minus the nominal time of the frame
(``round(frame * 1000 / fps)``). :class:`PacketReader` undoes the compaction and validates every field
before anything is allocated.

Face packets (intra, inter, inter+residual, new-face intra) each take the next sequence number; a no-face
packet (bitstream v2) says "no face in this frame", leaves the decoder's state alone and takes no sequence
number: its ``seq`` is the one the next face packet will have, so losing it never desynchronises a receiver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from sganc_stream.errors import BitstreamError

SEQ_MODULUS = 256
MAX_PAYLOAD = 1 << 24


class PacketType(IntEnum):
    INTRA = 0
    INTER = 1
    INTER_RESIDUAL = 2
    KEYFRAME_REQUEST = 3
    END = 4
    NO_FACE = 5  # v2: no face in this frame; empty payload, state unchanged, no sequence number used
    NEW_FACE = 6  # v2: an intra frame of another person than the previous face packet's (the identity changed)

    @property
    def label(self) -> str:
        return ("intra", "inter", "inter+residual", "keyframe_request", "end", "no_face", "new_face")[int(self)]

    @property
    def is_frame(self) -> bool:
        """A coded face: takes a sequence number and updates the decoder's state."""
        return self in (PacketType.INTRA, PacketType.INTER, PacketType.INTER_RESIDUAL, PacketType.NEW_FACE)

    @property
    def is_intra(self) -> bool:
        """A face packet that sets the decoder's state on its own (a keyframe)."""
        return self in (PacketType.INTRA, PacketType.NEW_FACE)

    @property
    def is_picture(self) -> bool:
        """One packet per source frame in a file: a face packet or a no-face packet."""
        return self.is_frame or self == PacketType.NO_FACE


COMPACT = (PacketType.INTER, PacketType.INTER_RESIDUAL)


@dataclass(frozen=True)
class Packet:
    """A packet with full (unwrapped) sequence number, frame index and timestamp in ms."""

    type: PacketType
    seq: int
    frame: int
    timestamp_ms: int
    payload: bytes = b""


def nominal_ms(frame: int, fps: float) -> int:
    return round(frame * 1000 / fps)


@contextmanager
def naming_packet(packet: Packet, source: str | None = None) -> Iterator[None]:
    """Re-raise a BitstreamError from the block as ``'SOURCE: frame N: …'`` (``'frame N: …'`` without ``source``),
    so a corrupt payload's message names the file and the frame it belongs to: the one place that prefix is made."""
    try:
        yield
    except BitstreamError as exc:
        raise BitstreamError(f"{source + ': ' if source else ''}frame {packet.frame}: {exc}") from None


def pack(packet: Packet, fps: float) -> bytes:
    """Serialise a packet (see the module doc for the compaction of inter packets)."""
    ts = packet.timestamp_ms - nominal_ms(packet.frame, fps)
    if packet.type in COMPACT:
        fields = [int(packet.type), packet.seq % SEQ_MODULUS, packet.frame - packet.seq, ts, packet.payload]
    else:
        fields = [int(packet.type), packet.seq, packet.frame, ts, packet.payload]
    return msgpack.packb(fields, use_bin_type=True)


def _check_int(v: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BitstreamError(f"malformed packet: {what} out of range")
    return v


def parse_fields(obj: object) -> tuple[PacketType, int, int, int, bytes]:
    """Validate one decoded msgpack object as a packet record."""
    if not isinstance(obj, (list, tuple)) or len(obj) != 5:
        raise BitstreamError("malformed packet: not a 5-field record")
    t, seq, frame, ts, payload = obj
    try:
        ptype = PacketType(_check_int(t, 0, max(PacketType), "type"))
    except ValueError:
        raise BitstreamError(f"malformed packet: unknown type {t}") from None
    if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD:
        raise BitstreamError("malformed packet: payload is not a byte string of sane size")
    seq = _check_int(seq, 0, (1 << 40), "sequence number")
    frame = _check_int(frame, -(1 << 40), 1 << 40, "frame index")
    ts = _check_int(ts, -(1 << 40), 1 << 40, "timestamp")
    return ptype, seq, frame, ts, payload


class PacketReader:
    """Turns records back into :class:`Packet`; keeps the last full sequence number to unwrap inter packets."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.last_seq: int | None = None

    def unpack(self, data: bytes) -> Packet:
        try:
            obj = msgpack.unpackb(data, raw=False, max_bin_len=MAX_PAYLOAD, max_str_len=0, max_array_len=5, max_map_len=0)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise BitstreamError(f"malformed packet ({type(exc).__name__})") from None
        return self.from_fields(obj)

    def from_fields(self, obj: object) -> Packet:
        ptype, seq, frame, ts, payload = parse_fields(obj)
        if ptype in COMPACT:
            if self.last_seq is None:
                raise BitstreamError("inter packet before any intra packet")
            if seq >= SEQ_MODULUS:
                raise BitstreamError("malformed packet: compact sequence number out of range")
            seq = self.last_seq + 1 + (seq - self.last_seq - 1) % SEQ_MODULUS
            frame = seq + frame
            if frame < 0:
                raise BitstreamError("malformed packet: negative frame index")
        if ptype != PacketType.NO_FACE:  # a no-face packet names the next sequence number without using it
            self.last_seq = seq
        return Packet(ptype, seq, frame, ts + nominal_ms(frame, self.fps), payload)
