"""The encoder side of the pipeline: frames → packets, with no torch import of its own.

:class:`FrameEncoder` runs align → E → T → quantise → rANS on any :class:`EncodeModel`: a
:class:`sganc_stream.pipeline.FaceModel` (PyTorch, the reference) or a :class:`sganc_stream.onnx_runtime.OnnxFaceModel`
loaded with its encoder graph (ONNX Runtime: the live call's default, a process that never imports torch). The
mirror of :mod:`sganc_stream.decoding`; ``transcode``, the live sender and the benchmarks all use it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.errors import CheckpointError
from sganc_stream.face.ffhq_quad import Quad
from sganc_stream.face.landmarks import LandmarkBackend
from sganc_stream.face.tracker import FaceFlags, VideoAligner
from sganc_stream.latent.codec import CodedFrame, LatentStreamEncoder, StreamParams
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.video import check_frame, resize_square

if TYPE_CHECKING:
    from sganc_stream.refine import RefineOptions


class EncodeModel(Protocol):
    """What encoding needs of a loaded face model (``encoder`` None: it can decode but not encode)."""

    encoder: Any
    codec: LatentCodecModel
    model_id: str
    source: str

    @property
    def size(self) -> int:
        """Side of the generator's output, in pixels."""

    @property
    def align_size(self) -> int:
        """Side of the aligned crops E takes."""

    def project(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 crops ``(n, S, S, 3)`` → E's W+ ``(n, rows, width)`` float32."""


@dataclass
class EncodedFrame:
    """What the encoder made of one input frame: a face packet, or a no-face packet (the face fields None)."""

    packet: Packet
    crop: np.ndarray | None  # (size, size, 3) uint8: the aligned face that was encoded
    flags: FaceFlags  # how the aligner found the face (0 for pre-aligned input)
    quad: Quad | None  # where the crop sits in the input frame (None for pre-aligned input and no-face frames)
    wplus: np.ndarray | None  # (rows, width) float32: E's projection before coding
    coded: CodedFrame | None  # the latent coder's output (its integer state; T⁻¹ only when ``recon_wplus`` is read)
    face_px: float = 0.0  # side of the face's quad in input pixels (the frame's side for pre-aligned input; 0: no face)

    @property
    def has_face(self) -> bool:
        return self.packet.type.is_frame

    @property
    def recon_wplus(self) -> np.ndarray | None:
        """(rows, width) float32: exactly what the decoder will reconstruct (computed on first read); None: no face."""
        return None if self.coded is None else self.coded.recon


class FrameEncoder:
    """Frames (uint8 RGB, any size) → packets, one stream: one packet per frame.

    ``align=True`` runs the FFHQ aligner (tracking, smoothing, main face; see ``face.tracker``) at the encoder's
    input size (``model.align_size``); ``align=False`` takes frames that already are aligned faces and only resizes
    them to that size. A frame in which the aligner finds no face yields a no-face packet; a frame from which on the
    aligner follows another person yields a new-face intra packet. Packet frame indices count input frames from 0,
    sequence numbers count face packets.

    ``refine`` (offline quality mode, :mod:`sganc_stream.refine`): E's W+ of each batch of faces is refined by
    gradient descent before coding, each frame pulled toward the previous one (not across a new face).
    """

    def __init__(self, model: EncodeModel, params: StreamParams, *, fps: float = 25.0, align: bool = True,
                 landmarks: str | LandmarkBackend = "dlib", refine: RefineOptions | None = None) -> None:
        if model.encoder is None:
            raise CheckpointError(f"{model.source}: model has no encoder, it can decode but not encode")
        self.model, self.params, self.fps = model, params, fps
        self.aligner = VideoAligner(model.align_size, landmarks, fps=fps) if align else None
        self.refiner = None
        if refine is not None and refine.steps > 0:  # gradient descent through G: PyTorch models only
            from sganc_stream.refine import LatentRefiner

            self.refiner = LatentRefiner(model, refine)  # type: ignore[arg-type]
        self._refined: np.ndarray | None = None  # the last refined W+ (rows, width): the next frame's temporal anchor
        self.latent = LatentStreamEncoder(model.codec, params, fps)
        self.frames_coded = 0  # face packets so far: the next one's sequence number
        self.frames_seen = 0  # input frames so far: the next packet's frame index
        self.timing: dict[str, float] = {}  # ms per stage of the last encode_batch: align, E, [refine,] code (T, quantise, rANS)
        self._t0: float | None = None

    def restart(self) -> None:
        """Start a new stream from the same camera: the next packet is an intra frame with sequence number 0.

        The aligner keeps its face track (and its loaded landmark models): only the coding state starts afresh.
        """
        self.latent = LatentStreamEncoder(self.model.codec, self.params, self.fps)
        self.frames_coded = 0
        self.frames_seen = 0
        self._t0 = None
        self._refined = None

    def request_keyframe(self) -> None:
        """Make the next packet an intra frame (a receiver lost sync)."""
        self.latent.request_keyframe()

    def header(self, frames: int) -> StreamHeader:
        """The stream header for ``frames`` coded frames (the live call sends the same fields at set-up)."""
        return self.params.header(self.model.codec, self.fps, frames)

    def encode(self, frame: np.ndarray, timestamp: float | None = None) -> EncodedFrame:
        """One frame (``timestamp``: capture time in seconds; None = nominal 1/fps spacing)."""
        return self.encode_batch([frame], None if timestamp is None else [timestamp])[0]

    def encode_batch(self, frames: Sequence[np.ndarray], timestamps: Sequence[float] | None = None
                     ) -> list[EncodedFrame]:
        """Several consecutive frames; E runs once on all of their faces. ``timing``: ms per stage afterwards."""
        t0 = time.perf_counter()
        faces = [self._align(f, None if timestamps is None else timestamps[i]) for i, f in enumerate(frames)]
        kept = [i for i, face in enumerate(faces) if face is not None]
        t1 = time.perf_counter()
        wplus = dict(zip(kept, self.model.project(np.stack([faces[i][0] for i in kept])))) if kept else {}
        t2 = time.perf_counter()
        self.timing = {"align": (t1 - t0) * 1000, "E": (t2 - t1) * 1000}
        if self.refiner is not None and kept:
            wplus = self._refine(faces, kept, wplus)
            self.timing["refine"] = (time.perf_counter() - t2) * 1000
            t2 = time.perf_counter()
        out = []
        for i, face in enumerate(faces):
            n = self.frames_seen
            if timestamps is None:
                ts_ms = round(n * 1000 / self.fps)
            else:
                self._t0 = timestamps[i] if self._t0 is None else self._t0  # the first frame, face or not
                ts_ms = round((timestamps[i] - self._t0) * 1000)
            self.frames_seen += 1
            if face is None:
                out.append(EncodedFrame(Packet(PacketType.NO_FACE, self.frames_coded, n, ts_ms), None,
                                        FaceFlags.NO_FACE, None, None, None))
                continue
            crop, flags, quad, face_px = face
            coded = self.latent.encode(wplus[i], new_face=bool(flags & FaceFlags.NEW_IDENTITY))
            packet = Packet(coded.type, self.frames_coded, n, ts_ms, coded.payload)
            out.append(EncodedFrame(packet, crop, flags, quad, wplus[i], coded, face_px))
            self.frames_coded += 1
        self.timing["code"] = (time.perf_counter() - t2) * 1000
        return out

    def _refine(self, faces: list[Any], kept: list[int], wplus: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Refine the kept faces' W+ in runs that start at a new face (no temporal pull across a change of person)."""
        assert self.refiner is not None
        runs: list[list[int]] = []
        for i in kept:
            if not runs or faces[i][1] & FaceFlags.NEW_IDENTITY:
                runs.append([])
            runs[-1].append(i)
        out = {}
        for run in runs:
            previous = None if faces[run[0]][1] & FaceFlags.NEW_IDENTITY else self._refined
            refined = self.refiner.refine(np.stack([faces[i][0] for i in run]), np.stack([wplus[i] for i in run]),
                                          previous)
            out.update(zip(run, refined))
            self._refined = refined[-1]
        return out

    def _align(self, frame: np.ndarray, timestamp: float | None
               ) -> tuple[np.ndarray, FaceFlags, Quad | None, float] | None:
        """(crop at the encoder's size, flags, quad, face side in input pixels), or None before the first face."""
        frame = check_frame(frame)
        if self.aligner is None:
            return resize_square(frame, self.model.align_size), FaceFlags(0), None, float(min(frame.shape[:2]))
        face = self.aligner.align(frame, timestamp)
        if face.flags & FaceFlags.NO_FACE:
            return None
        return face.crop, face.flags, face.quad, 2.0 * face.quad.half
