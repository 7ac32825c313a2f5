"""The .sgnc container: magic, version, a msgpack header map, packets, and an END packet with a CRC-32.

Files are written atomically (temporary file, then rename) so an interrupted run never leaves a
file that looks complete. Reading validates magic, version, header fields, every packet and the CRC
before the caller decodes anything. A file cut short in transit (a partial copy or download) can be read with
``partial=True``: the complete packets before the cut, with an :class:`~sganc_stream.errors.InputWarning`
(versions 2 to 6, whose face payloads carry check values; SPEC §2).

Version 2 (written) holds one packet per source frame, a face packet or a no-face packet, so packet ``k``
is frame ``k`` of the source and a decoded video lines up with it: the frames before the first face, and
every faceless frame after it, are no-face packets. Its payloads end with a check value (``entropy.rans``).
Version 1 (read only) holds face packets only, frame ``k`` = packet ``k``, without check values.
Version 3 is version 2 plus the header field ``residual`` (which residual table the stream codes with); it is
written only for streams that use the model's empirical residual tables, so every other stream stays version 2.
Version 4 (rate control) is version 3 plus the header field ``steps``: the quantization steps the stream switches
among, the first being ``step``, the unit of the decoder's state; every face packet's payload names its step
(``entropy.rans``: the step choice). It is written only for rate-controlled streams (``--target-kbps``).
Version 5 is version 3 plus two header fields: ``context``, how inter differences are coded (``factorized``, or
``temporal``: each channel's table chosen by its previous decoded difference, ``latent.context``), and
``decimation`` ``d`` (packet ``k`` codes source frame ``k·d``; the decoder interpolates the ``d − 1`` frames between
packets, ``latent.sequence``). It is written only for streams that use one of them and a fixed step.
Version 6 is version 5 plus version 4's ``steps`` and step choice: a rate-controlled stream with temporal context or
decimation.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack

from sganc_stream.bitstream.packet import MAX_PAYLOAD, Packet, PacketReader, PacketType, nominal_ms, pack
from sganc_stream.errors import BitstreamError, InputError, InputWarning
from sganc_stream.fileio import write_bytes_atomic

MAGIC = b"SGNC"
VERSION = 2  # what this build writes (VERSION_RESIDUAL for streams with empirical residual tables)
VERSION_RESIDUAL = 3  # adds the header field ``residual``
VERSION_RATE = 4  # adds the header field ``steps`` and a step choice in every face packet's payload
VERSION_CONTEXT = 5  # version 3 plus the header fields ``context`` (temporal context) and ``decimation``
VERSION_RATE_CONTEXT = 6  # version 5 plus version 4's ``steps`` and step choice
READABLE = (1, 2, 3, 4, 5, 6)  # what it reads
CONTEXTS = ("factorized", "temporal")  # how a stream codes inter differences (v5 header ``context``; before: factorized)
MAX_DECIMATION = 16  # largest v5 ``decimation``: source frames per packet
MODES = ("open", "closed", "intra")
RESIDUALS = ("irwin_hall", "empirical")  # residual tables a v3 header may name (versions 1 and 2: irwin_hall)
MAX_STEPS = 16  # steps a version 4 stream may switch among
MAX_STEP_MULTIPLE = 1 << 16  # largest ratio of a version 4 step to the stream's unit step
# Frame rates a stream may state. The floor keeps nominal times (frame x 1000 / fps, in ms) finite for every
# frame index a packet can carry (< 2**40); 1000 fps is far above any camera.
FPS_MIN, FPS_MAX = 0.001, 1000.0


def switches_steps(version: int) -> bool:
    """A stream of this version names its steps in the header and every face packet's step (versions 4 and 6)."""
    return version in (VERSION_RATE, VERSION_RATE_CONTEXT)


def has_v5_tools(version: int) -> bool:
    """A stream of this version has the header fields ``context`` and ``decimation`` and repeats (versions 5 and 6)."""
    return version in (VERSION_CONTEXT, VERSION_RATE_CONTEXT)


def stream_version(residual: str, rate_controlled: bool = False, context: str = "factorized", decimation: int = 1) -> int:
    """The bitstream version a stream with residual table ``residual`` is written as: 4 when rate-controlled, 5 with
    temporal context or decimation, 6 with both; else 2, or 3 with the empirical residual table."""
    if context != "factorized" or decimation != 1:
        return VERSION_RATE_CONTEXT if rate_controlled else VERSION_CONTEXT
    if rate_controlled:
        return VERSION_RATE
    return VERSION if residual == "irwin_hall" else VERSION_RESIDUAL


def step_multiples(steps: tuple[float, ...]) -> list[int] | None:
    """``steps[j] / steps[0]`` as integers (binary64 division, exact on every IEEE machine) for a valid version 4
    step list: 2 … MAX_STEPS finite positive steps, strictly increasing, each an integer multiple (≤ 2^16) of the
    first; None for any other list."""
    if not 2 <= len(steps) <= MAX_STEPS or not all(0 < s < float("inf") for s in steps):
        return None
    ratios = [s / steps[0] for s in steps]
    if any(b <= a for a, b in zip(steps, steps[1:])) or any(r != int(r) or r > MAX_STEP_MULTIPLE for r in ratios):
        return None
    return [int(r) for r in ratios]


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
    frames: int  # packets before the end packet (v2: source frames, face or no-face; v1: face frames)
    keyframe_interval: int
    residual: str = "irwin_hall"  # residual table (in the map from version 3 on; before: irwin_hall)
    steps: tuple[float, ...] = ()  # versions 4 and 6: the steps the stream switches among, steps[0] == step; else none
    context: str = "factorized"  # versions 5 and 6: how inter differences are coded
    decimation: int = 1  # versions 5 and 6: source frames per packet (the decoder interpolates the others)
    version: int = VERSION  # bitstream version: the container's version byte, or the call protocol's (not in the map)

    def to_map(self) -> dict[str, object]:
        d = asdict(self)
        d["model_id"] = bytes.fromhex(self.model_id)
        del d["version"]
        if switches_steps(self.version):
            d["steps"] = list(self.steps)
        elif self.steps:
            raise ValueError(f"bitstream version {self.version} cannot switch steps")
        else:
            del d["steps"]
        if not has_v5_tools(self.version):
            if self.context != "factorized" or self.decimation != 1:
                raise ValueError(f"bitstream version {self.version} cannot code with temporal context or decimation")
            del d["context"], d["decimation"]
        if self.version < VERSION_RESIDUAL:
            if self.residual != "irwin_hall":
                raise ValueError(f"bitstream version {self.version} cannot name the {self.residual} residual table")
            del d["residual"]
        return d

    @classmethod
    def from_map(cls, m: object, version: int = VERSION) -> StreamHeader:
        """Validate a decoded header map: every field present with its wire type (no coercion), none unknown, then
        in range. ``version`` is the container's version byte (not in the map)."""
        if not isinstance(m, dict):
            raise BitstreamError("malformed header: not a map")
        fields = cls.__dataclass_fields__
        try:
            raw = {k: m[k] for k in fields if k != "version" and (k != "residual" or version >= VERSION_RESIDUAL)
                   and (k != "steps" or switches_steps(version))
                   and (k not in ("context", "decimation") or has_v5_tools(version))}
        except KeyError:
            raise BitstreamError("malformed header: missing field") from None
        if len(m) != len(raw):
            raise BitstreamError("malformed header: unknown field")
        for k, v in raw.items():  # model_id is bytes on the wire; a float field may arrive as an int
            want = (bytes,) if k == "model_id" else {"str": (str,), "float": (int, float)}.get(fields[k].type, (int,))
            if k == "steps":
                if type(v) is not list or len(v) > MAX_STEPS or any(type(x) not in (int, float) for x in v):
                    raise BitstreamError("malformed header: field steps is not a list of at most 16 numbers")
                raw[k] = tuple(float(x) for x in v)
            elif type(v) not in want:  # exact types: no bool for an int, no coercion from other types
                raise BitstreamError(f"malformed header: field {k} has type {type(v).__name__}")
        raw["model_id"] = raw["model_id"].hex()
        h = cls(**{k: float(v) if fields[k].type == "float" else v for k, v in raw.items()}, version=version)
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
            or h.residual not in RESIDUALS
            or (switches_steps(version) and (step_multiples(h.steps) is None or h.steps[0] != h.step))
            or h.context not in CONTEXTS
            or not 1 <= h.decimation <= MAX_DECIMATION
        ):
            raise BitstreamError("malformed header: field out of range")
        return h


def encode_container(header: StreamHeader, packets: list[Packet]) -> bytes:
    """The whole file as bytes (version ``header.version``, 2 unless asked); an END packet carrying the CRC-32 of
    everything before it is appended. Packet order and numbering are the caller's (:func:`decode_container`
    checks them)."""
    if header.version not in READABLE:
        raise ValueError(f"cannot write bitstream version {header.version}")
    body = bytearray(MAGIC + bytes([header.version]))
    body += msgpack.packb(header.to_map(), use_bin_type=True)
    for p in packets:
        body += pack(p, header.fps)
    faces = sum(p.type.is_frame for p in packets)
    end = Packet(PacketType.END, faces, header.frames, nominal_ms(header.frames, header.fps), struct.pack("<I", zlib.crc32(body)))
    return bytes(body + pack(end, header.fps))


def write_container(path: str | os.PathLike[str], header: StreamHeader, packets: list[Packet]) -> int:
    """Write atomically; returns the file size in bytes."""
    data = encode_container(header, packets)
    write_bytes_atomic(path, data)
    return len(data)


@dataclass
class Container:
    header: StreamHeader
    packets: list[Packet]  # one per source frame, in order: face packets and (v2) no-face packets
    record_bytes: list[int]  # serialized size of each packet
    header_bytes: int  # magic + version + header map
    total_bytes: int
    complete: bool = True  # False: read with ``partial=True`` from a file that ends before its end packet
    source: str = "input"  # the file's name, for messages about its packets


def decode_container(data: bytes, source: str = "input", *, partial: bool = False) -> Container:
    """Parse and validate a whole .sgnc file held in memory.

    ``partial``: a version 2–6 file that ends before its end packet (SPEC §2, "a file cut short") after at least one
    complete packet gives its complete packets, ``complete=False``, and one
    :class:`~sganc_stream.errors.InputWarning` naming how many of the declared frames it holds; otherwise (no complete
    packet, or version 1) that is a BitstreamError ("truncated"). Everything else is validated as for a whole file.

    Raises:
        BitstreamError: bad magic, unknown version, malformed header or packet, wrong order or numbering, checksum
            mismatch, trailing bytes, or truncation (unless ``partial``, see above).
    """
    if len(data) < len(MAGIC) + 1 or data[:4] != MAGIC:
        raise BitstreamError(f"{source}: not an .sgnc file (bad magic)")
    version = data[4]
    if version not in READABLE:
        raise BitstreamError(f"{source}: unknown bitstream version {version} (this build reads versions "
                             f"{', '.join(map(str, READABLE))})")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1), max_bin_len=MAX_PAYLOAD, max_str_len=64,
                                max_array_len=MAX_STEPS, max_map_len=32)
    unpacker.feed(data[5:])
    try:
        header = StreamHeader.from_map(next(unpacker), version)
    except StopIteration:
        raise BitstreamError(f"{source}: truncated (header incomplete)") from None
    except BitstreamError as exc:
        raise BitstreamError(f"{source}: {exc}") from None
    except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
        raise BitstreamError(f"{source}: malformed header ({type(exc).__name__})") from None
    header_bytes = 5 + unpacker.tell()
    reader = PacketReader(header.fps)
    packets: list[Packet] = []
    sizes: list[int] = []
    faces = 0  # face packets so far: the next one's sequence number
    pos = header_bytes
    while True:
        try:
            obj = next(unpacker)
        except StopIteration:
            if partial and version >= 2 and packets:
                warnings.warn(InputWarning(f"{source} ended early: no end packet; it holds {len(packets)} complete "
                                           f"frames of the {header.frames} its header declares (the file's checksum "
                                           "cannot be checked)"), stacklevel=2)
                return Container(header, packets, sizes, header_bytes, len(data), complete=False, source=source)
            raise BitstreamError(f"{source}: truncated (no end packet after {len(packets)} frames)") from None
        except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
            raise BitstreamError(f"{source}: corrupted packet after {len(packets)} frames ({type(exc).__name__})") from None
        end = 5 + unpacker.tell()
        try:
            packet = reader.from_fields(obj)
        except BitstreamError as exc:
            raise BitstreamError(f"{source}: corrupted after {len(packets)} frames ({exc})") from None
        if packet.type == PacketType.END:
            expected = (faces, header.frames, nominal_ms(header.frames, header.fps))
            if len(packet.payload) != 4 or struct.unpack("<I", packet.payload)[0] != zlib.crc32(data[:pos]):
                raise BitstreamError(f"{source}: corrupted (checksum mismatch)")
            if (packet.seq, packet.frame, packet.timestamp_ms) != expected:
                raise BitstreamError(f"{source}: corrupted end packet")
            if end != len(data):
                raise BitstreamError(f"{source}: trailing bytes after the end packet")
            break
        allowed = packet.type.is_picture if version >= 2 else packet.type in (0, 1, 2)
        if not allowed:
            raise BitstreamError(f"{source}: unexpected {packet.type.label} packet in a version {version} file")
        if packet.seq != faces:
            raise BitstreamError(f"{source}: packet {len(packets)} has sequence number {packet.seq}, expected {faces}")
        if version >= 2 and packet.frame != len(packets):
            raise BitstreamError(f"{source}: packet {len(packets)} has frame index {packet.frame}")
        if len(packets) == header.frames:
            raise BitstreamError(f"{source}: header says {header.frames} frames, file holds more")
        faces += packet.type.is_frame
        packets.append(packet)
        sizes.append(end - pos)
        pos = end
    if len(packets) != header.frames:
        raise BitstreamError(f"{source}: header says {header.frames} frames, file holds {len(packets)}")
    return Container(header, packets, sizes, header_bytes, len(data), source=source)


def read_container(path: str | os.PathLike[str], *, partial: bool = False) -> Container:
    """:func:`decode_container` of a file. Raises InputError if there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return decode_container(path.read_bytes(), source=str(path), partial=partial)
