"""Frame in → packets out → frame out: the streaming pipeline that the CLI, the sender and the receiver all run.

:class:`FrameEncoder` (:mod:`sganc_stream.encoding`, which imports no torch) turns one camera/clip frame at a time
into one packet (align → E → T → quantize → rANS);
:class:`FrameDecoder` (:mod:`sganc_stream.decoding`, which imports no torch) turns packets back into frames
(rANS → T⁻¹ → G). Neither does file I/O, so a live sender and
receiver use exactly the objects that offline transcoding uses. ``encode_batch`` / ``decode_batch`` run the networks
on several frames at once (the point of a GPU); the latent coding itself stays sequential because it is stateful.

File-level work (read a clip, write .sgnc / videos / report) is :func:`transcode_frames`, :func:`transcode_file` and
:func:`sganc_stream.decoding.decode_file`. Timing: every input frame comes with its presentation (or capture) time, which its packet
carries (``timestamp_ms``, from the first input frame); every video written here places each frame at its packet's
time, so a variable-frame-rate clip stays in sync with its audio.

Frames without a face (before the first face, or while it is gone) are not invented: each becomes a no-face packet
(bitstream v2, a few bytes, the decoder's state untouched) and decodes to a black frame (``NO_FACE_PIXEL``), as a
video call shows a participant without video: the receiver has only the face, never the background. So a stream
has one packet per source frame and a decoded video lines up with its source frame for frame. Pasted back into the
source frames (``paste_back``, sender side only), a no-face frame is the source frame unchanged. Decode equality: the reconstruction written by a transcode is produced by a
:class:`FrameDecoder` fed the packets that go into the file, in the same batches a later ``decode`` uses, so on the
same machine and settings (device, ``batch``) both give identical uint8 arrays; written with ``lossless`` they stay
identical on disk, otherwise both are H.264 encodings of identical arrays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sganc_stream.bitstream.container import FPS_MAX, FPS_MIN, fps_in_range, write_container
from sganc_stream.bitstream.packet import Packet, pack
from sganc_stream.bundle import Bundle, bundle_config, is_bundle_file
from sganc_stream.decoding import NO_FACE_PIXEL, FrameDecoder, no_face_pictures
from sganc_stream.encoding import EncodedFrame, FrameEncoder
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.face.landmarks import LandmarkBackend
from sganc_stream.face.paste_back import PasteBack
from sganc_stream.face.tracker import FaceFlags
from sganc_stream.fileio import check_stream_output, check_writable
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import LatentCodecModel, no_codec_error
from sganc_stream.models.checkpoint import load_checkpoint
from sganc_stream.models.encoders import images_as_tensor
from sganc_stream.models.onnx_export import Project
from sganc_stream.models.stylegan2 import Generator, to_uint8_images
from sganc_stream.metrics import IDENTITY_EVERY
from sganc_stream.refine import RefineOptions, refine_settings
from sganc_stream.report import QualityMeter, stream_report, write_json
from sganc_stream.video import VideoReader, VideoWriter, resize_square, video_format


TimedFrame = tuple[np.ndarray, float]  # (uint8 RGB (H, W, 3), presentation time in seconds)
# the TranscodeOptions fields that are videos
VIDEO_OUTPUTS = ("recon", "aligned", "paste_back", "aligned_vs_decoded", "side_by_side")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a one-line InputError when CUDA is asked for and absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unsupported device {device!r} (cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {device!r} (cpu or cuda)")
    return dev


@dataclass
class FaceModel:
    """One bundle loaded for streaming: generator G, encoder E (None: decode only), latent codec, config, id."""

    generator: Generator
    encoder: torch.nn.Module | None
    codec: LatentCodecModel
    config: dict[str, Any]
    model_id: str
    source: str
    device: torch.device

    @property
    def size(self) -> int:
        """Side of the generator's output (what is decoded and displayed)."""
        return self.generator.size

    @property
    def align_size(self) -> int:
        """Side of the aligned crops: the encoder's input size (256 for pSp/e4e), else the generator's side."""
        encoder = self.config.get("encoder")
        return int(encoder["input_size"]) if self.encoder is not None and encoder else self.size

    @property
    def rows(self) -> int:
        return self.codec.rows

    @torch.inference_mode()
    def render(self, wplus: np.ndarray) -> np.ndarray:
        """W+ ``(n, rows, width)`` → uint8 RGB ``(n, size, size, 3)`` (G output clamped to [-1, 1])."""
        w = torch.from_numpy(np.ascontiguousarray(wplus, dtype=np.float32)).to(self.device)
        return to_uint8_images(self.generator(w)).contiguous().cpu().numpy()

    @torch.inference_mode()
    def project(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 crops ``(n, S, S, 3)`` → E's W+ ``(n, rows, width)`` float32 (at E's input size)."""
        if self.encoder is None:
            raise CheckpointError(f"{self.source}: model has no encoder, it can decode but not encode")
        x = images_as_tensor(crops).to(self.device)
        return Project(self.encoder, int(self.config["encoder"]["input_size"]))(x).cpu().numpy()


def load_face_model(path: str | os.PathLike[str], device: str = "cpu") -> FaceModel:
    """Load a full bundle (generator, optional encoder, latent codec) and check that its parts fit together."""
    dev = resolve_device(device)
    if is_bundle_file(path) and "codec" not in bundle_config(path):  # before reading (possibly 1.2 GB of) weights
        raise no_codec_error(str(path))
    loaded = load_checkpoint(path)
    codec = LatentCodecModel.from_bundle(Bundle(loaded.extra_tensors, loaded.config), source=str(path))
    codec.model_id = loaded.model_id  # the whole file's content hash, which every stream header carries
    g = loaded.generator
    if (codec.rows, codec.width) != (g.n_latent, g.config.style_dim):
        raise CheckpointError(f"{path}: latent codec codes {codec.rows}x{codec.width} but the generator takes "
                              f"{g.n_latent}x{g.config.style_dim}")
    encoder = None if loaded.encoder is None else loaded.encoder.to(dev).eval()
    return FaceModel(g.to(dev).eval(), encoder, codec, loaded.config, codec.model_id, str(path), dev)



# ----------------------------------------------------------------------------------------------------
# Files


@dataclass
class TranscodeOptions:
    """What a transcode writes besides the .sgnc, and how it runs."""

    params: StreamParams = field(default_factory=StreamParams)
    recon: Path | None = None  # decoded crops
    aligned: Path | None = None  # aligned input crops
    paste_back: Path | None = None  # input frames with the decoded face composited back
    aligned_vs_decoded: Path | None = None  # aligned input | decoded
    side_by_side: Path | None = None  # input frame | input frame with the decoded face pasted back
    report: Path | None = None
    quality: bool = False  # measure quality (implied by report)
    lossless: bool = False  # bit-exact video outputs (libx264rgb qp 0)
    align: bool = True  # False: input frames are already aligned faces
    batch: int = 1
    max_frames: int | None = None
    identity_every: int = IDENTITY_EVERY  # identity distance on every N-th frame (about 0.1 s a pair on CPU)
    progress: bool = True
    landmarks: str | LandmarkBackend = "dlib"
    refine: RefineOptions | None = None  # offline quality mode: W+ refined by gradient descent before coding


def _limited(frames: Iterable[TimedFrame], limit: int | None) -> Iterator[TimedFrame]:
    for i, frame in enumerate(frames):
        if limit is not None and i >= limit:
            return
        yield frame


def nominal_times(frames: Iterable[np.ndarray], fps: float) -> Iterator[TimedFrame]:
    """Frames without their own times (generated, pre-loaded) as ``(frame, index / fps)``."""
    return ((frame, i / fps) for i, frame in enumerate(frames))


def check_outputs(output: str | os.PathLike[str], options: TranscodeOptions) -> None:
    """Every output of a transcode can be written (``output`` ends in .sgnc, folders, video formats): a one-line
    InputError before any work."""
    check_stream_output(output, f"for a video of the decoded faces pass --recon {Path(output).name}")
    if options.report is not None:
        check_writable(Path(options.report))
    for path in (getattr(options, k) for k in VIDEO_OUTPUTS):
        if path is not None:
            video_format(path, options.lossless)


def transcode_frames(model: FaceModel, frames: Iterable[TimedFrame], fps: float, output: str | os.PathLike[str],
                     options: TranscodeOptions, *, name: str = "input", total: int | None = None) -> dict[str, Any]:
    """Encode ``frames`` into ``output`` (.sgnc), write the asked-for videos and report; returns the report dict.

    ``frames``: ``(uint8 RGB (H, W, 3), presentation time in seconds)`` pairs, times increasing (a
    :meth:`VideoReader.timed` pass, camera capture times, or :func:`nominal_times`); ``fps`` is the nominal (average)
    rate for the header; ``total`` the number of frames the source declares (progress bar; the report's
    ``input_frames.declared``). Memory stays bounded by ``options.batch`` frames; only the (small) packets are kept
    until the file is written. Every output is atomic: on any error none of them is left looking complete.
    """
    output = Path(output)
    if options.batch < 1:
        raise InputError(f"--batch must be at least 1, got {options.batch}")
    if not fps_in_range(fps):
        raise InputError(f"{name}: frame rate {fps} is outside [{FPS_MIN:g}, {FPS_MAX:g}]")
    check_outputs(output, options)
    videos = {k: getattr(options, k) for k in VIDEO_OUTPUTS}
    quality = options.quality or options.report is not None
    decode = quality or any(videos[k] is not None for k in ("recon", "paste_back", "aligned_vs_decoded", "side_by_side"))
    encoder = FrameEncoder(model, options.params, fps=fps, align=options.align, landmarks=options.landmarks,
                           refine=options.refine)
    decoder = FrameDecoder(model, options.params, options.params.version())
    meters = {"vs_aligned": QualityMeter(options.identity_every), "vs_projected": QualityMeter(options.identity_every)}
    paster = PasteBack(model.size) if options.paste_back is not None or options.side_by_side is not None else None
    packets: list[Packet] = []
    records: list[dict[str, Any]] = []
    timing = {"encode": 0.0, "decode": 0.0}
    scale: dict[str, int] = {}
    read = 0
    limit = total if options.max_frames is None else min(options.max_frames, total or options.max_frames)
    with ExitStack() as stack:
        writers = {k: stack.enter_context(VideoWriter(p, fps, lossless=options.lossless))
                   for k, p in videos.items() if p is not None}
        bar = stack.enter_context(tqdm(total=limit, unit="frame", desc="transcode", mininterval=1.0,
                                       disable=not options.progress))
        pending: list[tuple[EncodedFrame, np.ndarray]] = []

        def flush(group: list[tuple[EncodedFrame, np.ndarray]]) -> None:
            """Decode one batch of packets (the batches `decode` will use) and write every output of it."""
            t0 = time.perf_counter()
            recon = decoder.decode_batch([e.packet for e, _ in group])
            timing["decode"] += time.perf_counter() - t0
            faces = [i for i, (e, _) in enumerate(group) if e.has_face]
            if quality and faces:  # at the source face's size (the first face's): nothing compared is upscaled
                side = scale.setdefault("side", quality_side(group[faces[0]][0].face_px, model.align_size, model.size))
                crops = resize_square(np.stack([group[i][0].crop for i in faces]), side)
                projected = resize_square(model.render(np.stack([group[i][0].wplus for i in faces])), side)
                shown = resize_square(recon[faces], side)
                psnrs = meters["vs_aligned"].add(crops, shown)
                meters["vs_projected"].add(projected, shown)
                for i, p in zip(faces, psnrs):
                    records[group[i][0].packet.frame]["psnr_vs_aligned"] = _finite(p)
            for i, (e, frame) in enumerate(group):
                t = e.packet.timestamp_ms / 1000
                if "recon" in writers:
                    writers["recon"].write(recon[i], t)
                if "aligned_vs_decoded" in writers:
                    shown = recon[i] if e.crop is None else resize_square(e.crop, model.size)
                    writers["aligned_vs_decoded"].write(np.hstack([shown, recon[i]]), t)
                if paster is not None:
                    pasted = frame if e.quad is None else paster(frame, recon[i], e.quad)
                    if "paste_back" in writers:
                        writers["paste_back"].write(pasted, t)
                    if "side_by_side" in writers:
                        writers["side_by_side"].write(np.hstack([frame, pasted]), t)

        chunk: list[TimedFrame] = []
        for last, frame in _with_last(_limited(frames, options.max_frames)):
            chunk.append(frame)
            read += 1
            if len(chunk) < options.batch and not last:
                continue
            coded = _encode_chunk(encoder, chunk, packets, records, writers, timing)
            bar.update(len(chunk))
            chunk = []
            if decode:
                pending.extend(coded)
                while len(pending) >= options.batch or (last and pending):
                    flush(pending[:options.batch])
                    del pending[:options.batch]
        if not encoder.frames_coded:
            raise InputError(no_face_message(name, len(packets), fps, total, options.max_frames))
        header = encoder.header(len(packets))
        size = write_container(output, header, packets)
    report = stream_report(header, size, records, timing=timing, decoded=decode,
                           quality={k: m.summary() for k, m in meters.items()} if quality else None)
    report["stream"]["refine"] = refine_settings(options.refine)  # None: E's W+ coded as is
    # encoder-only choices (no header field says them): what --drift-damping / --rounding-offset resolved to
    report["stream"]["drift_damping"] = options.params.damping
    report["stream"]["rounding_offset"] = options.params.rounding_offset
    report["input"] = name
    report["alignment"] = alignment_summary(records, model)
    if quality:
        report["quality"].update(size=scale.get("side"), measured_at=(
            "source face size: aligned crops and decoded frames area-downscaled to the first coded frame's face side "
            "in input pixels, capped by the aligned and generated sizes (never upscaled), at least 64 px"))
    report["input_frames"] = {"read": read, "declared": total}
    # Decoded pixels depend on the device, the batch and torch's CPU threads: decode equals this run's recon when
    # all three match (they do by default on one machine).
    report["speed"].update(device=str(model.device), batch=options.batch, torch_threads=torch.get_num_threads())
    report["outputs"] = {"sgnc": str(output), **{k: str(v) for k, v in videos.items() if v is not None},
                         "lossless": options.lossless}
    if options.report is not None:
        write_json(options.report, report)
    return report


MIN_QUALITY_SIDE = 64  # MS-SSIM's 5 scales need over 32 px; dlib's face detector finds faces from about 80


def quality_side(face_px: float, align_size: int, output_size: int) -> int:
    """Side (px) at which decoded faces are compared with their references.

    The source face's own side (``face_px``, in input pixels), so faces smaller than the aligned crop are not scored
    on upscaled pixels; capped by the aligned crop and the generator output so that nothing compared is upscaled;
    raised to 64 px where those allow (smaller is too small for the metrics).
    """
    cap = min(align_size, output_size)
    return int(min(cap, max(round(face_px), MIN_QUALITY_SIDE)))


def alignment_summary(records: list[dict[str, Any]], model: FaceModel) -> dict[str, Any]:
    """REPORT.json ``alignment``: crop and output sides, the source faces' sides and the upscale factor.

    ``upscale`` = aligned side / median source face side: above 1 the encoder saw an enlarged face.
    """
    px = np.asarray([r["face_px"] for r in records if r.get("face_px") is not None], dtype=np.float64)
    median = round(float(np.median(px)), 1) if len(px) else None
    return {"size": model.align_size, "output_size": model.size,
            "source_face_px": {"median": median, "min": float(px.min()), "max": float(px.max())} if len(px) else None,
            "upscale": round(model.align_size / median, 3) if median else None}


def _with_last(items: Iterable[TimedFrame]) -> Iterator[tuple[bool, TimedFrame]]:
    """(is_last, item) pairs: the loop must know the last frame to flush a short final batch."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield False, prev
        prev = item
    yield True, prev


def no_face_message(name: str, searched: int, fps: float, total: int | None, limit: int | None) -> str:
    """The one line for an input in which no frame shows a face: how much of it was searched."""
    of = f" of {total}" if total else ""
    stop = f"; the search stopped at the frame limit ({limit})" if limit is not None and searched >= limit else ""
    return f"no face found in {name}: searched {searched}{of} frames ({searched / fps:.2f} s){stop}"


def _encode_chunk(encoder: FrameEncoder, chunk: list[TimedFrame], packets: list[Packet], records: list[dict],
                  writers: dict[str, VideoWriter], timing: dict[str, float]) -> list[tuple[EncodedFrame, np.ndarray]]:
    """Encode a chunk, collect packets and per-frame records; returns the encoded frames with their input."""
    t0 = time.perf_counter()
    encoded = encoder.encode_batch([f for f, _ in chunk], [t for _, t in chunk])
    timing["encode"] += time.perf_counter() - t0
    for e in encoded:
        packets.append(e.packet)
        records.append({"index": e.packet.frame, "type": e.packet.type.label,
                        "bytes": len(pack(e.packet, encoder.fps)), "payload_bytes": len(e.packet.payload),
                        "step": e.coded.step if e.coded is not None else None,  # rate control varies it
                        "face": [f.name for f in FaceFlags if f in e.flags],
                        "face_px": round(e.face_px, 1) if e.has_face else None})
        if "aligned" in writers:
            writers["aligned"].write(e.crop if e.crop is not None else no_face_pictures(1, encoder.model.align_size)[0],
                                     e.packet.timestamp_ms / 1000)
    return [(e, frame) for e, (frame, _) in zip(encoded, chunk)]


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def transcode_file(model: FaceModel, input: str | os.PathLike[str], output: str | os.PathLike[str],
                   options: TranscodeOptions) -> dict[str, Any]:
    """:func:`transcode_frames` on a video file or image folder, upright and at its frames' own times."""
    with VideoReader(input) as reader:
        return transcode_frames(model, reader.timed(), reader.fps, output, options, name=str(input),
                                total=reader.frame_count)
