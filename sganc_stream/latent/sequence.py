"""Whole latent sequences ↔ .sgnc bytes: the file-level face of the latent codec.

A latent sequence is a float array (frames, rows, width). A frame that is all NaN stands for a frame without a
face: it is coded as a no-face packet (bitstream v2) and decodes back to an all-NaN frame, so a sequence and its
stream line up frame for frame. Any other NaN or infinity is an error.

Decimation (``StreamParams.decimation`` = d, bitstream v5): only source frames 0, d, 2d, … are coded, one packet each
(the header's fps is the source's / d), and the decoder outputs d frames per packet: packet k's frame, then d − 1
frames interpolated linearly in W+ towards packet k + 1's (:func:`interpolate`). Fewer packets means fewer differences
to code and less framing and per-message transport overhead; the interpolated frames' error is measured by
``benchmarks/inter_context.py``. A decoded decimated stream has ``packets · d`` frames, up to d − 1 more than its
source (the last packet's frame is held).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from collections.abc import Collection

from sganc_stream.bitstream.container import Container, StreamHeader, decode_container, encode_container

from sganc_stream.bitstream.packet import Packet, PacketType, naming_packet
from sganc_stream.errors import InputError, ModelMismatchError
from sganc_stream.latent.codec import CodedFrame, LatentStreamDecoder, LatentStreamEncoder, StreamParams
from sganc_stream.latent.model import LatentCodecModel


@dataclass
class EncodeResult:
    data: bytes
    coded: list[CodedFrame | None]  # per frame: its coded face frame (integer state), None for a no-face frame
    shape: tuple[int, int, int]  # (packets, rows, width): with decimation, the coded frames only
    frame_types: list[str] = field(default_factory=list)
    ideal_bits: list[float] = field(default_factory=list)
    payload_bits: list[int] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)  # the steps the stream codes with (one unless rate-controlled)
    step_choices: list[int] = field(default_factory=list)  # per face frame: its step, an index into ``steps``
    decimation: int = 1  # source frames per packet (``coded``, ``frame_types`` … are per packet)

    @cached_property
    def recon(self) -> np.ndarray:
        """(packets · decimation, rows, width) float32: the decoder's output (:func:`decode_sequence`), all NaN for
        no-face frames. T⁻¹ runs on first read (frame by frame, as the decoder does): a caller that only wants the bytes
        never pays for it."""
        out = np.full((len(self.coded), *self.shape[1:]), np.nan, dtype=np.float32)
        for t, coded in enumerate(self.coded):
            if coded is not None:
                out[t] = coded.recon
        return interpolate(out, [c is not None and c.type.is_intra for c in self.coded], self.decimation)[0]


def interpolate(packets: np.ndarray, intra: list[bool], d: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoded frames of a decimated stream (bitstream v5): ``packets`` (P, rows, width) float32, each packet's
    W+ (all NaN for no face), ``intra`` (P,) whether each is an intra frame, ``d`` the decimation. Returns
    ((P·d, rows, width) float32, (P·d,) bool: interpolated). Frame ``k·d`` is packet k's; frame ``k·d + i``
    (0 < i < d) is ``w_k + fl32(i / d) · (w_{k+1} − w_k)`` in float32 when packets k and k + 1 both hold a face and
    k + 1 is not an intra frame (a keyframe or another person may jump), else packet k's frame held (NaN when it
    has no face); after the last packet its frame is held. With d = 1 the packets themselves."""
    if d == 1:
        return packets, np.zeros(len(packets), dtype=bool)
    out = np.repeat(packets, d, axis=0)
    mask = np.zeros(len(out), dtype=bool)
    face = ~np.isnan(packets).reshape(len(packets), -1).all(axis=1)
    for k in range(len(packets) - 1):
        if face[k] and face[k + 1] and not intra[k + 1]:
            for i in range(1, d):
                out[k * d + i] = packets[k] + np.float32(i / d) * (packets[k + 1] - packets[k])
            mask[k * d + 1:(k + 1) * d] = True
    return out, mask


def check_latents(latents: np.ndarray, model: LatentCodecModel) -> np.ndarray:
    """Validate a (frames, rows, width) array against the model; returns float32."""
    if latents.ndim != 3 or latents.shape[1:] != (model.rows, model.width):
        raise InputError(f"latents have shape {latents.shape}, this model codes (frames, {model.rows}, {model.width})")
    if latents.shape[0] == 0:
        raise InputError("latents hold no frames")
    if not np.issubdtype(latents.dtype, np.floating):
        raise InputError(f"latents must be floating point, got {latents.dtype}")
    return np.ascontiguousarray(latents, dtype=np.float32)


def no_face_frames(latents: np.ndarray) -> np.ndarray:
    """(frames,) bool: the all-NaN frames of a (frames, rows, width) sequence, which stand for no face."""
    return np.isnan(latents).reshape(len(latents), -1).all(axis=1)


def encode_sequence(model: LatentCodecModel, latents: np.ndarray, params: StreamParams, fps: float = 25.0,
                    new_faces: Collection[int] = ()) -> EncodeResult:
    """Code (frames, rows, width) latents at ``fps`` into a whole .sgnc file (bitstream v2; v3 with empirical residual
    tables, v4 with rate control, v5 with temporal context or decimation: every ``params.decimation``-th frame coded).

    All-NaN frames become no-face packets; ``new_faces``: indices of frames where another person's face starts
    (coded as new-face intra frames; with decimation, at the next coded frame). InputError for bad latents.
    """
    latents = check_latents(latents, model)
    d = params.decimation
    fps = fps / d
    new_faces = {-(-t // d) for t in new_faces}
    latents = latents[::d]
    enc = LatentStreamEncoder(model, params, fps)
    packets: list[Packet] = []
    res = EncodeResult(b"", [], latents.shape, decimation=d)
    seq = 0
    for t, (w, empty) in enumerate(zip(latents, no_face_frames(latents))):
        if empty:
            packets.append(Packet(PacketType.NO_FACE, seq, t, round(t * 1000 / fps)))
            res.coded.append(None)
            res.frame_types.append(PacketType.NO_FACE.label)
            res.ideal_bits.append(0.0)
            res.payload_bits.append(0)
            continue
        coded = enc.encode(w, new_face=t in new_faces)
        packets.append(Packet(coded.type, seq, t, round(t * 1000 / fps), coded.payload))
        seq += 1
        res.coded.append(coded)
        res.frame_types.append(coded.type.label)
        res.ideal_bits.append(coded.ideal_bits)
        res.payload_bits.append(8 * len(coded.payload))
    res.data = encode_container(params.header(model, fps, len(latents)), packets)
    res.steps = [model.steps[i] for i in params.steps(model)]
    res.step_choices = enc.choices
    return res


def check_stream_model(stream_model_id: str, model_id: str) -> None:
    """ModelMismatchError (one line, naming both ids and the fix) unless a stream header's model id is the model's."""
    if stream_model_id != model_id:
        raise ModelMismatchError(f"stream was made with model {stream_model_id[:16]}…, the loaded model is "
                                 f"{model_id[:16]}…; pass that model's bundle with --model (`sganc-stream inspect "
                                 "FILE` prints the model id of a stream or a bundle)")


def stream_params(model: LatentCodecModel, header: StreamHeader) -> StreamParams:
    """Check that a stream was made with ``model`` and return its parameters."""
    check_stream_model(header.model_id, model.model_id)
    if (header.rows, header.width) != (model.rows, model.width):
        raise ModelMismatchError("stream latent shape differs from the model's")
    return StreamParams(header.mode, header.g, model.step_index(header.step), header.keyframe_interval, header.residual,
                        step_set=tuple(model.step_index(s) for s in header.steps), inter_context=header.context,
                        decimation=header.decimation)


def decode_sequence(model: LatentCodecModel, container: Container) -> np.ndarray:
    """(frames, rows, width) float32 latents of a stream, all NaN for its no-face frames (decimated streams:
    packets · d frames, see :func:`interpolated_frames`); BitstreamError, naming the file and frame, if corrupt."""
    dec = LatentStreamDecoder(model, stream_params(model, container.header), container.header.version)
    out = np.full((len(container.packets), model.rows, model.width), np.nan, dtype=np.float32)
    for i, p in enumerate(container.packets):
        if p.type.is_frame:
            with naming_packet(p, container.source):
                out[i] = dec.decode(p.type, p.payload)
    return interpolate(out, [p.type.is_intra for p in container.packets], container.header.decimation)[0]


def interpolated_frames(container: Container) -> list[int]:
    """Indices of the decoded frames of a stream that the decoder interpolates (decimation; empty otherwise)."""
    faces = np.array([[np.nan] if p.type == PacketType.NO_FACE else [0.0] for p in container.packets], np.float32)
    mask = interpolate(faces, [p.type.is_intra for p in container.packets], container.header.decimation)[1]
    return [int(i) for i in np.flatnonzero(mask)]


def decode_bytes(model: LatentCodecModel, data: bytes, source: str = "input") -> np.ndarray:
    return decode_sequence(model, decode_container(data, source))


def time_coding(model: LatentCodecModel, latents: np.ndarray, params: StreamParams) -> dict[str, float]:
    """Median per-frame milliseconds of the full encode and decode of each frame (T, rANS, T⁻¹)."""
    latents = check_latents(latents, model)
    enc, dec = LatentStreamEncoder(model, params), LatentStreamDecoder(model, params, params.version())
    te, td = [], []
    for w in latents:
        t0 = time.perf_counter()
        coded = enc.encode(w)
        t1 = time.perf_counter()
        dec.decode(coded.type, coded.payload)
        td.append(time.perf_counter() - t1)
        te.append(t1 - t0)
    return {"encode_ms": 1e3 * float(np.median(te)), "decode_ms": 1e3 * float(np.median(td))}
