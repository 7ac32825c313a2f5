"""The systems the bitrate-versus-g benchmark compares, behind one interface (as CompressAI's benchmark has its codec
classes): a :class:`System` names its operating points and codes a clip at one of them into a :class:`Coding`
(bytes per frame as payload, as carried and on the wire, the decoded W+ or pixels, a file to keep). The benchmark
(bitrate_vs_g.py) measures every system the same way from there: rates, latent MSE, pixel quality.

* :class:`Sganc`: this codec's latent coding of E(x) at a (mode, g, Δ), exactly as ``transcode`` writes it; its
  bits are broken down by packet type, coded part, stage group and W+ row (``sganc_stream.latent.breakdown``).
* :class:`PixelCodec`: a pixel codec through PyAV (x264, x265, SVT-AV1, VP9; baselines.py) at a target kbps on the
  same aligned crops.
* :class:`NaiveLatents`: W+ rounded to a fixed step and compressed with zlib / bzip2 (baselines.py), per frame.
"""

from __future__ import annotations

import csv
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ablations import CachedProxies
from baselines import COMPRESSORS, PIXEL_CODECS, code_pixels, naive_code
from rd import rtp_wire_bytes, wire_bytes
from sganc_stream.bitstream.container import decode_container, encode_container
from sganc_stream.bitstream.packet import Packet
from sganc_stream.cli.transcode import encoder_words
from sganc_stream.errors import InputError
from sganc_stream.latent.breakdown import BitBreakdown, bit_breakdown
from sganc_stream.latent.codec import (AUTO, LatentStreamEncoder, StreamParams, resolve_encoder_choices,
                                       resolve_residual)
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.quantize import ROUNDING_OFFSET
from sganc_stream.pipeline import FaceModel, FrameEncoder
from sganc_stream.training.face_data import clip_identity
from sganc_stream.video import VideoReader

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIPS = REPO.parent / "shared" / "data" / "clips"
DEFAULT_CLIP_DIRS = ("dreamtalk_mead", "mead_eamm")  # the MEAD clips
HEADLINE_G = 10


def g_label(g: int) -> str:
    return "never" if g == 0 else str(g)


def safe(name: str) -> str:
    return name.replace("/", "__")


# ----------------------------------------------------------------------------------------------------
# Clips


@dataclass
class Clip:
    """One clip, aligned and projected once: everything the codings are measured against."""

    name: str
    identity: str
    fps: float
    crops: np.ndarray  # (n, S, S, 3) uint8 aligned original
    wplus: np.ndarray  # (n, rows, width) float32 E(x)
    pipeline_payloads: list[bytes]  # FrameEncoder's open g=10 middle-Δ payloads (a self-check of the re-coding)
    scored: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    projected: np.ndarray | None = None  # G(E(x)) on the scored frames
    proxies: dict[bytes, np.ndarray] = field(default_factory=dict)  # T(w) by content, shared by all clips


def manifest_hints() -> dict[str, str]:
    path = SHARED_CLIPS / "MANIFEST.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {r["file"]: r.get("identity_hint", "") for r in csv.DictReader(f)}


def clip_name_and_identity(path: Path, hints: dict[str, str]) -> tuple[str, str]:
    """Name for tables, and identity: the training split's rule inside ../shared, the file stem elsewhere."""
    try:
        rel = path.resolve().relative_to(SHARED_CLIPS.resolve()).as_posix()
    except ValueError:
        return f"{path.parent.name}/{path.stem}", f"external:{path.parent.name}/{path.stem}"
    return rel.rsplit(".", 1)[0], clip_identity(rel, hints.get(rel, ""))


def find_clips(paths: list[str] | None) -> list[Path]:
    """Video files given (files or folders, recursively), or the MEAD clips of ../shared."""
    roots = [Path(p) for p in paths] if paths else [SHARED_CLIPS / d for d in DEFAULT_CLIP_DIRS]
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            out += sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm"))
        elif root.is_file():
            out.append(root)
        else:
            sys.exit(f"error: {root}: no such clip or folder")
    if not out:
        sys.exit("error: no clips found")
    return out


@dataclass(frozen=True)
class EncoderOptions:
    """The commands' inter-coding options (``--inter-context --drift-damping --rounding-offset``, cli.options), applied
    to the modes that have them: a context and a dead zone to inter differences (not intra mode), damping to the open
    loop only. The defaults are the commands' (``auto``: what the model's tables were fitted for, :meth:`resolved`)."""

    inter_context: str = AUTO
    damping: float | str = AUTO
    rounding_offset: float | str = AUTO

    def resolved(self, codec: LatentCodecModel) -> EncoderOptions:
        """These options with ``auto`` resolved as the commands resolve it for an open-loop stream of ``codec``
        (``latent.codec.resolve_encoder_choices``); :func:`sganc_params` narrows them to each mode."""
        return EncoderOptions(*resolve_encoder_choices(self.inter_context, self.damping, self.rounding_offset, "open",
                                                       codec))

    def label(self) -> str:
        """E.g. ``temporal context, drift damping 0.5, rounding offset 0.167`` (for tables and plots; resolved
        options, in the words transcode's summary line uses)."""
        return encoder_words({"context": self.inter_context, "drift_damping": self.damping,
                              "rounding_offset": self.rounding_offset})


def sganc_params(model: FaceModel, mode: str, g: int, step_index: int, residual: str = AUTO,
                 encoder: EncoderOptions = EncoderOptions()) -> StreamParams:
    """The StreamParams of one sganc point, with ``residual`` (``--residual-table``) resolved as the commands do and
    ``encoder`` applied where ``mode`` has inter differences: the one place both the latent grid and the pipeline
    self-check get theirs, so they code alike. Raises InputError for options the model cannot code (temporal context
    without its tables)."""
    inter = mode != "intra"
    encoder = encoder.resolved(model.codec)
    params = StreamParams(mode, g, step_index, residual=resolve_residual(residual, mode, g, model.codec),
                          inter_context=encoder.inter_context if inter else "factorized",
                          damping=encoder.damping if mode == "open" else 0.0,
                          rounding_offset=encoder.rounding_offset if inter else ROUNDING_OFFSET)
    params.check_model(model.codec)
    return params


def load_clip(model: FaceModel, path: Path, max_frames: int | None, name: str, identity: str,
              proxies: dict[bytes, np.ndarray], residual: str = AUTO,
              encoder: EncoderOptions = EncoderOptions()) -> Clip:
    """Align and encode a clip exactly as transcode does (frames without a face are left out); the pipeline payloads
    are the open g = 10 middle-Δ stream with ``residual`` (``--residual-table``) and ``encoder``, as :class:`Sganc`
    recodes it.
    Raises InputError when fewer than 2 frames have a face."""
    params = sganc_params(model, "open", HEADLINE_G, len(model.codec.steps) // 2, residual, encoder)
    crops, wplus, payloads = [], [], []
    with VideoReader(path) as reader:
        fps = reader.fps
        enc = FrameEncoder(model, params, fps=fps)
        for i, frame in enumerate(reader):
            if max_frames is not None and i >= max_frames:
                break
            e = enc.encode(frame)
            if e.has_face:
                crops.append(e.crop)
                wplus.append(e.wplus)
                payloads.append(e.packet.payload)
    if len(crops) < 2:
        raise InputError(f"{path}: fewer than 2 frames with a face")
    return Clip(name, identity, fps, np.stack(crops), np.stack(wplus), payloads, proxies=proxies)


# ----------------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class Point:
    """One operating point of a system; ``key()`` is how results name it (rows, CSV, JSON)."""

    system: str
    mode: str = ""  # sganc: open | closed | intra; naive latents: the compressor
    g: int | None = None  # sganc open loop: residual period (0 = never)
    step: float | None = None  # sganc: Δ; naive latents: the rounding step
    target_kbps: float | None = None  # pixel codecs
    step_index: int | None = None  # sganc: the preset index of ``step``

    def key(self) -> dict[str, Any]:
        return {"system": self.system, "mode": self.mode, "g": None if self.g is None else g_label(self.g),
                "step": self.step, "target_kbps": self.target_kbps}

    @property
    def label(self) -> str:
        """Short name for plots and per-frame curves (sganc: 'open g=10', 'closed', 'intra')."""
        if self.system == "sganc":
            return f"open g={g_label(self.g or 0)}" if self.mode == "open" else self.mode
        return f"{self.system} {self.mode or ''} {self.step or self.target_kbps or ''}".strip()


@dataclass
class Coding:
    """One clip coded at one point. Per-frame arrays hold bytes; ``record`` is what a file or the data channel
    carries per frame (payload + framing; pixel codecs: the elementary stream), ``wire`` its IPv4 estimate."""

    payload: np.ndarray  # (frames,) bytes of coded data
    record: np.ndarray  # (frames,) bytes as carried
    wire: np.ndarray  # (frames,) estimated bytes on the wire
    file_bytes: int = 0  # the whole file (sganc: the .sgnc; naive: the clip compressed at once); 0: none
    wplus: np.ndarray | None = None  # (n, rows, width) decoded W+ (latent systems)
    pixels: np.ndarray | None = None  # (n, S, S, 3) uint8 decoded frames (pixel codecs)
    data: bytes = b""  # the file to keep, if the system keeps this point
    suffix: str = ""  # its file name suffix
    breakdown: BitBreakdown | None = None  # where the bits go (sganc)
    notes: dict[str, Any] = field(default_factory=dict)


class System(ABC):
    """A system the benchmark compares. ``scored``: its output is rendered / scored with the pixel metrics
    (PSNR, MS-SSIM, identity) on the scored frames; latent systems are also measured by latent MSE."""

    name: str
    scored: bool = True
    timing: str = "pixel_codecs_s"  # the run's timing entry its coding time adds to

    @abstractmethod
    def points(self) -> list[Point]:
        """The operating points to run, in result order."""

    @abstractmethod
    def code(self, clip: Clip, point: Point) -> Coding:
        """Code ``clip`` at ``point`` and decode it again."""

    def keeps(self, point: Point) -> bool:
        """Whether the produced file at this point is kept for independent measurement."""
        return False

    def file_name(self, clip: Clip, point: Point, coding: Coding) -> str:
        """Name of the kept file (only called where :meth:`keeps`)."""
        raise NotImplementedError(f"{self.name} keeps no files")


class Sganc(System):
    """The latent codec of a face model at (mode, g, Δ): packets, .sgnc container, breakdown; identical to what
    ``transcode`` writes (the re-coding of open g = 10 at the middle Δ is checked against FrameEncoder's).
    ``residual``: the residual table as ``--residual-table`` takes it (default ``auto``, the commands' default:
    the model's empirical table where it has one for g)."""

    name = "sganc"
    timing = "latent_grid_s"

    def __init__(self, model: FaceModel, configs: list[StreamParams], residual: str = AUTO,
                 encoder: EncoderOptions = EncoderOptions()) -> None:
        self.model, self.configs, self.residual, self.encoder = model, configs, residual, encoder

    def points(self) -> list[Point]:
        steps = self.model.codec.steps
        return [Point("sganc", p.mode, p.g if p.mode == "open" else None, steps[p.step_index], step_index=p.step_index)
                for p in self.configs]

    def params(self, point: Point) -> StreamParams:
        assert point.step_index is not None
        return sganc_params(self.model, point.mode, point.g or 0, point.step_index, self.residual, self.encoder)

    def code(self, clip: Clip, point: Point) -> Coding:
        codec, params = self.model.codec, self.params(point)
        enc = LatentStreamEncoder(CachedProxies(codec, clip.proxies), params)  # type: ignore[arg-type]
        packets, recon = [], np.empty_like(clip.wplus)
        for t, w in enumerate(clip.wplus):
            coded = enc.encode(w)
            packets.append(Packet(coded.type, t, t, round(t * 1000 / clip.fps), coded.payload))
            recon[t] = coded.recon
        data = encode_container(params.header(codec, clip.fps, len(packets)), packets)
        container = decode_container(data)  # the file as a reader sees it: record sizes and the breakdown
        record = np.array(container.record_bytes)
        return Coding(np.array([len(p.payload) for p in packets]), record, np.array([wire_bytes(int(r)) for r in record]),
                      len(data), wplus=recon, data=data, suffix=".sgnc",
                      breakdown=bit_breakdown(container, codec, transport=True),
                      notes={"payloads": [p.payload for p in packets]})

    def keeps(self, point: Point) -> bool:
        mid = len(self.model.codec.steps) // 2
        return point.g == HEADLINE_G if point.mode == "open" else point.step_index == mid

    def file_name(self, clip: Clip, point: Point, coding: Coding) -> str:
        g = "" if point.mode != "open" else f"_g{g_label(point.g or 0)}"
        return f"{safe(clip.name)}.{point.mode}{g}_step{point.step:g}.sgnc"


class PixelCodec(System):
    """A pixel codec (baselines.PIXEL_CODECS) in low-delay settings at each target kbps, on the aligned crops."""

    def __init__(self, name: str, targets: list[float]) -> None:
        if name not in PIXEL_CODECS:
            raise ValueError(f"unknown pixel codec {name}")
        self.name, self.targets = name, targets

    def points(self) -> list[Point]:
        return [Point(self.name, target_kbps=t) for t in self.targets]

    def code(self, clip: Clip, point: Point) -> Coding:
        assert point.target_kbps is not None
        r = code_pixels(clip.crops, self.name, point.target_kbps, clip.fps)
        sizes = np.array(r.packet_bytes)
        return Coding(sizes, sizes, np.array([rtp_wire_bytes(int(b)) for b in sizes]), pixels=r.decoded,
                      data=r.stream, suffix=PIXEL_CODECS[self.name].raw_suffix)

    def keeps(self, point: Point) -> bool:
        return self.name == "x265" and bool(PIXEL_CODECS[self.name].raw_suffix)

    def file_name(self, clip: Clip, point: Point, coding: Coding) -> str:
        return f"{safe(clip.name)}.{self.name}_{point.target_kbps:g}kbps{coding.suffix}"


class NaiveLatents(System):
    """W+ rounded to each step and compressed frame by frame (streamable) with each general-purpose compressor;
    ``file_bytes`` is the whole clip compressed at once (a bound, not streamable). Not rendered."""

    name = "naive"
    scored = False
    timing = "naive_s"

    def __init__(self, steps: tuple[float, ...], compressors: tuple[str, ...] = tuple(COMPRESSORS)) -> None:
        self.steps, self.compressors = steps, compressors

    def points(self) -> list[Point]:
        return [Point("naive", comp, step=s) for s in self.steps for comp in self.compressors]

    def code(self, clip: Clip, point: Point) -> Coding:
        assert point.step is not None
        r = naive_code(clip.wplus, point.step, point.mode)
        per_frame = np.asarray(r["frame_bytes"])
        return Coding(per_frame, per_frame, np.array([wire_bytes(int(b)) for b in per_frame]), r["clip_bytes"],
                      wplus=r["recon"], notes={"dtype": r["dtype"]})
