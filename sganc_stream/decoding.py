"""The decoder side of the pipeline: packets → frames, and .sgnc file → video, with no torch import of its own.

:class:`FrameDecoder` runs rANS → T⁻¹ → G on any :class:`DecodeModel`: a :class:`sganc_stream.pipeline.FaceModel`
(PyTorch, the reference) or a :class:`sganc_stream.onnx_runtime.OnnxFaceModel` (ONNX Runtime: a decode-only process
that never imports torch). The live receiver, ``transcode --recon`` and ``decode`` all use it (see
:mod:`sganc_stream.pipeline` for the encoder side and the decode-equality rule).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from sganc_stream.bitstream.container import VERSION, Container, StreamHeader, read_container
from sganc_stream.bitstream.packet import Packet, PacketType, naming_packet
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import stream_params
from sganc_stream.video import VideoWriter, video_format

NO_FACE_PIXEL = 0  # a no-face frame decodes to this uniform (black) picture


def no_face_pictures(n: int, size: int) -> np.ndarray:
    """What a decoder shows for ``n`` no-face packets: ``(n, size, size, 3)`` uint8, all ``NO_FACE_PIXEL`` (black),
    never a face (SPEC.md §1: a no-face frame must not show one). Used by file decoding and the live call."""
    return np.full((n, size, size, 3), NO_FACE_PIXEL, dtype=np.uint8)


class DecodeModel(Protocol):
    """What decoding needs of a loaded face model."""

    codec: LatentCodecModel
    source: str

    @property
    def size(self) -> int:
        """Side of the generator's output, in pixels."""

    def render(self, wplus: np.ndarray) -> np.ndarray:
        """W+ ``(n, rows, width)`` float32 → uint8 RGB ``(n, size, size, 3)``."""


class FrameDecoder:
    """Packets → frames (uint8 RGB, the generator's side), one stream; stateless apart from the latent state.

    ``version``: the stream's bitstream version (``StreamHeader.version``).
    """

    def __init__(self, model: DecodeModel, params: StreamParams, version: int = VERSION) -> None:
        self.model, self.params = model, params
        self.latent = LatentStreamDecoder(model.codec, params, version)

    @classmethod
    def for_header(cls, model: DecodeModel, header: StreamHeader) -> FrameDecoder:
        """A decoder for a stream; ModelMismatchError if the stream was made with another model."""
        return cls(model, stream_params(model.codec, header), header.version)

    @property
    def synchronized(self) -> bool:
        return self.latent.synchronized

    def reset(self) -> None:
        """Drop the state after a loss: the next decodable packet is an intra frame."""
        self.latent.reset()

    def latents(self, packet: Packet) -> np.ndarray:
        """rANS and T⁻¹ only: the (rows, width) W+ frame of one face packet (updates the stream state).

        BitstreamError for a corrupt payload, an inter packet without state, or a packet that is not a face."""
        return self.latent.decode(packet.type, packet.payload)

    def decode(self, packet: Packet) -> np.ndarray:
        """One packet → one (size, size, 3) uint8 frame."""
        return self.decode_batch([packet])[0]

    def decode_batch(self, packets: Sequence[Packet]) -> np.ndarray:
        """Consecutive packets → ``(n, size, size, 3)`` uint8; G runs once on all their faces, no-face packets give
        ``NO_FACE_PIXEL`` frames. BitstreamError, naming the packet's frame index, for a corrupt payload."""
        size = self.model.size
        out = no_face_pictures(len(packets), size)
        faces = [i for i, p in enumerate(packets) if p.type != PacketType.NO_FACE]
        if faces:
            out[faces] = self.model.render(np.stack([self._named(packets[i]) for i in faces]))
        return out

    def _named(self, packet: Packet) -> np.ndarray:
        """:meth:`latents`; its BitstreamError names the packet's frame index."""
        with naming_packet(packet):
            return self.latents(packet)


def decode_file(model: DecodeModel, input: str | os.PathLike[str], output: str | os.PathLike[str], *,
                lossless: bool = False, batch: int = 1, progress: bool = True,
                container: Container | None = None) -> dict[str, Any]:
    """Regenerate a video from an .sgnc file alone, one frame per packet (no-face frames black) at its packet's time;
    returns frames, no-face frames, fps and decode speed. ``container``: ``input`` already read (not read again)."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    video_format(output, lossless)
    container = container if container is not None else read_container(input)
    if container.header.decimation > 1:
        raise InputError(f"{input}: a decimated stream (bitstream v5, decimation {container.header.decimation}); the "
                         "video decoder does not interpolate yet: decode its latents with `sganc-stream latents decode`")
    decoder = FrameDecoder.for_header(model, container.header)  # model check before any work
    packets = container.packets
    t0 = time.perf_counter()
    with VideoWriter(output, container.header.fps, lossless=lossless) as writer, \
            tqdm(total=len(packets), unit="frame", desc="decode", mininterval=1.0, disable=not progress) as bar:
        for start in range(0, len(packets), batch):
            group = packets[start:start + batch]
            try:
                frames = decoder.decode_batch(group)
            except BitstreamError as exc:
                raise BitstreamError(f"{container.source}: {exc}") from None
            for frame, packet in zip(frames, group):
                writer.write(frame, packet.timestamp_ms / 1000)
            bar.update(min(batch, len(packets) - start))
    seconds = time.perf_counter() - t0
    return {"frames": len(packets), "no_face_frames": sum(p.type == PacketType.NO_FACE for p in packets),
            "fps": container.header.fps, "decode_fps": len(packets) / max(seconds, 1e-9)}
