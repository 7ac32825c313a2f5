"""The .sgnc container: magic, version, a msgpack header map, packets, and an END packet with a CRC-32.

Files are written atomically (temporary file, then rename) so an interrupted run never leaves a
file that looks complete. Reading validates magic, version, header fields, every packet and the CRC
before the caller decodes anything.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack

from sganc_stream.bitstream.packet import MAX_PAYLOAD, Packet, PacketReader, PacketType, nominal_ms, pack
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.fileio import write_bytes_atomic

MAGIC = b"SGNC"
VERSION = 1
MODES = ("open", "closed", "intra")
# Frame rates a stream may state. The floor keeps nominal times (frame x 1000 / fps, in ms) finite for every
# frame index a packet can carry (< 2**40); 1000 fps is far above any camera.
FPS_MIN, FPS_MAX = 0.001, 1000.0


def fps_in_range(fps: float) -> bool:
    """True for a frame rate a stream header may carry (NaN and infinities are not)."""
    return FPS_MIN <= fps <= FPS_MAX


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder needs besides the model itself."""

    model_id: str  # hex SHA-256 of the model bundle (tables and transform weights included)
    rows: int
    width: int
    mode: str
    g: int
    step: float
    fps: float
    frames: int
    keyframe_interval: int

    def to_map(self) -> dict[str, object]:
        d = asdict(self)
        d["model_id"] = bytes.fromhex(self.model_id)
        return d

    @classmethod
    def from_map(cls, m: object) -> StreamHeader:
        """Validate a decoded header map: every field present with its wire type (no coercion), then in range."""
        if not isinstance(m, dict):
            raise BitstreamError("malformed header: not a map")
        fields = cls.__dataclass_fields__
        try:
            raw = {k: m[k] for k in fields}
        except KeyError:
            raise BitstreamError("malformed header: missing field") from None
        for k, v in raw.items():  # model_id is bytes on the wire; a float field may arrive as an int
            want = (bytes,) if k == "model_id" else {"str": (str,), "float": (int, float)}.get(fields[k].type, (int,))
            if type(v) not in want:  # exact types: no bool for an int, no coercion from other types
                raise BitstreamError(f"malformed header: field {k} has type {type(v).__name__}")
        raw["model_id"] = raw["model_id"].hex()
        h = cls(**{k: float(v) if fields[k].type == "float" else v for k, v in raw.items()})
        if (
            len(h.model_id) != 64
            or not 1 <= h.rows <= 64
            or not 1 <= h.width <= 4096
            or h.mode not in MODES
            or not 0 <= h.g <= 255
            or not 0 < h.step < float("inf")
            or not fps_in_range(h.fps)
            or not 0 <= h.frames <= 10_000_000
            or h.keyframe_interval < 0
        ):
            raise BitstreamError("malformed header: field out of range")
        return h


def encode_container(header: StreamHeader, packets: list[Packet]) -> bytes:
    """The whole file as bytes; an END packet carrying the CRC-32 of everything before it is appended."""
    body = bytearray(MAGIC + bytes([VERSION]))
    body += msgpack.packb(header.to_map(), use_bin_type=True)
    for p in packets:
        body += pack(p, header.fps)
    end = Packet(PacketType.END, len(packets), header.frames, nominal_ms(header.frames, header.fps), struct.pack("<I", zlib.crc32(body)))
    return bytes(body + pack(end, header.fps))


def write_container(path: str | os.PathLike[str], header: StreamHeader, packets: list[Packet]) -> int:
    """Write atomically; returns the file size in bytes."""
    data = encode_container(header, packets)
    write_bytes_atomic(path, data)
    return len(data)


@dataclass
class Container:
    header: StreamHeader
    packets: list[Packet]  # frame packets only, in order
    record_bytes: list[int]  # serialized size of each frame packet
    header_bytes: int  # magic + version + header map
    total_bytes: int


def decode_container(data: bytes, source: str = "input") -> Container:
    """Parse and validate a whole .sgnc file held in memory."""
    if len(data) < len(MAGIC) + 1 or data[:4] != MAGIC:
        raise BitstreamError(f"{source}: not an .sgnc file (bad magic)")
    if data[4] != VERSION:
        raise BitstreamError(f"{source}: unknown bitstream version {data[4]} (this build reads version {VERSION})")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1), max_bin_len=MAX_PAYLOAD, max_str_len=64, max_array_len=5, max_map_len=32)
    unpacker.feed(data[5:])
    try:
        header = StreamHeader.from_map(next(unpacker))
    except StopIteration:
        raise BitstreamError(f"{source}: truncated (header incomplete)") from None
    except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
        raise BitstreamError(f"{source}: malformed header ({type(exc).__name__})") from None
    header_bytes = 5 + unpacker.tell()
    reader = PacketReader(header.fps)
    packets: list[Packet] = []
    sizes: list[int] = []
    pos = header_bytes
    while True:
        try:
            obj = next(unpacker)
        except StopIteration:
            raise BitstreamError(f"{source}: truncated (no end packet after {len(packets)} frames)") from None
        except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
            raise BitstreamError(f"{source}: corrupted packet after {len(packets)} frames ({type(exc).__name__})") from None
        end = 5 + unpacker.tell()
        try:
            packet = reader.from_fields(obj)
        except BitstreamError as exc:
            raise BitstreamError(f"{source}: corrupted after {len(packets)} frames ({exc})") from None
        if packet.type == PacketType.END:
            expected = (len(packets), header.frames, nominal_ms(header.frames, header.fps))
            if len(packet.payload) != 4 or struct.unpack("<I", packet.payload)[0] != zlib.crc32(data[:pos]):
                raise BitstreamError(f"{source}: corrupted (checksum mismatch)")
            if (packet.seq, packet.frame, packet.timestamp_ms) != expected:
                raise BitstreamError(f"{source}: corrupted end packet")
            if end != len(data):
                raise BitstreamError(f"{source}: trailing bytes after the end packet")
            break
        if not packet.type.is_frame:
            raise BitstreamError(f"{source}: unexpected {packet.type.label} packet in a file")
        if packet.seq != len(packets):
            raise BitstreamError(f"{source}: packet {len(packets)} has sequence number {packet.seq}")
        packets.append(packet)
        sizes.append(end - pos)
        pos = end
    if len(packets) != header.frames:
        raise BitstreamError(f"{source}: header says {header.frames} frames, file holds {len(packets)}")
    return Container(header, packets, sizes, header_bytes, len(data))


def read_container(path: str | os.PathLike[str]) -> Container:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return decode_container(path.read_bytes(), source=str(path))
