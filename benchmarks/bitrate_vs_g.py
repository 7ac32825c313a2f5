"""Bitrate versus residual period g, against pixel codecs and the naive latent coding, with ablations (issue #9).

    python benchmarks/bitrate_vs_g.py [--quick] [--model BUNDLE] [--clips PATH ...] [--keep DIR]
                                      [--engine local|ray [--address auto|HOST:PORT] [--workers N] ...]
    python benchmarks/bitrate_vs_g.py --from-json benchmarks/results/bitrate_vs_g.json   # tables and plots again

Each clip is aligned and encoded once, exactly as ``sganc-stream transcode`` does it (FrameEncoder: FFHQ
alignment, E on one frame at a time); its W+ is then coded by the latent codec for every (mode, g, Δ): open loop
with g ∈ {1, 2, 5, 10, 20, 40, 80, never}, closed loop and intra-only. Rates come from the packets: payload
(rANS bytes), packet (payload + msgpack framing, what an .sgnc file and the data channel carry), file (the whole
.sgnc, header and end packet included: what transcode reports) and wire (the estimate of rd.py: SCTP/DTLS/UDP/IP).
Quality: latent MSE against E(x) on every frame; PSNR, MS-SSIM and dlib identity distance of G(decoded W+) against
the aligned original and against the projection G(E(x)), on the scored frames (every ``--score-every``-th; identity
on every ``--identity-every``-th scored frame). Baselines code the same aligned crops (baselines.py); ablations
are in ablations.py. Headline ratios are interpolated on the operational rate–quality curves and never
extrapolated (rd.py).

Writes benchmarks/results/bitrate_vs_g[_quick].{json,csv,md} and *.png, each JSON with command, commit and
machine. ``--quick``: 3 clips of at most 100 frames, g ∈ {2, 10, 40, never} (g = 10 at every Δ, the rest at the
middle Δ), x265 only, every 4th frame scored, no trained ablations — the CI smoke run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ablations import CachedProxies, compare_variants, irwin_hall_vs_empirical, train_variants
from baselines import PIXEL_CODECS, code_pixels, keep_stream, naive_code
from common import RESULTS, write_result
from rd import headline_ratio, kbps, rtp_wire_bytes, wire_bytes
from sganc_stream.assets import default_face_model
from sganc_stream.bitstream.container import StreamHeader, encode_container
from sganc_stream.bitstream.packet import Packet, pack
from sganc_stream.cli.transcode import add_engine_options, engine_from
from sganc_stream.engine import Failed, open_pool
from sganc_stream.errors import InputError, SgancError
from sganc_stream.latent.codec import LatentStreamEncoder, StreamParams
from sganc_stream.metrics import FaceDescriptor, ms_ssim, psnr
from sganc_stream.pipeline import FaceModel, FrameEncoder, load_face_model
from sganc_stream.training.face_data import clip_identity
from sganc_stream.video import VideoReader, VideoWriter

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIPS = REPO.parent / "shared" / "data" / "clips"
DEFAULT_CLIP_DIRS = ("dreamtalk_mead", "mead_eamm")  # the MEAD clips
# Training-identity clips (other people than MEAD M030) for the ablation codecs and the empirical residual fit.
DEFAULT_TRAIN_CLIPS = ("styletalk/source_video/andrew_clip_1.mp4", "styletalk/source_video/reagan_clip1.mp4",
                       "styletalk/source_video/feifeili_clip1.mp4", "sadtalker_hdtf/WDA_KatieHill_000.mp4",
                       "iplap/129.mp4", "edtalk/mouth_source.mp4", "liveportrait/driving_d0.mp4",
                       "pcavs/Input/00002.mp4")
FULL_GS = (1, 2, 5, 10, 20, 40, 80, 0)
QUICK_GS = (2, 10, 40, 0)
FULL_KBPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_KBPS = (1, 4, 16, 64)
NAIVE_STEPS = (2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
HEADLINE_G = 10


def g_label(g: int) -> str:
    return "never" if g == 0 else str(g)


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


def load_clip(model: FaceModel, path: Path, max_frames: int | None, name: str, identity: str,
              proxies: dict[bytes, np.ndarray]) -> Clip:
    """Align and encode a clip exactly as transcode does (frames without a face are left out)."""
    params = StreamParams("open", HEADLINE_G, len(model.codec.steps) // 2)
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
# Latent coding


@dataclass
class Coded:
    payload: np.ndarray  # bytes per frame
    record: np.ndarray  # msgpack packet bytes per frame
    wire: np.ndarray  # wire estimate per frame
    file_bytes: int
    recon: np.ndarray  # (n, rows, width) exactly what the decoder outputs
    payloads: list[bytes]
    data: bytes  # the .sgnc file


def code_latents(model: FaceModel, clip: Clip, params: StreamParams) -> Coded:
    codec = model.codec
    enc = LatentStreamEncoder(CachedProxies(codec, clip.proxies), params)  # type: ignore[arg-type]
    packets, recon = [], np.empty_like(clip.wplus)
    for t, w in enumerate(clip.wplus):
        coded = enc.encode(w)
        packets.append(Packet(coded.type, t, t, round(t * 1000 / clip.fps), coded.payload))
        recon[t] = coded.recon
    header = StreamHeader(model.model_id, codec.rows, codec.width, params.mode, params.g, codec.steps[params.step_index],
                          clip.fps, len(packets), params.keyframe_interval)
    data = encode_container(header, packets)
    record = np.array([len(pack(p, clip.fps)) for p in packets])
    return Coded(np.array([len(p.payload) for p in packets]), record, np.array([wire_bytes(r) for r in record]),
                 len(data), recon, [p.payload for p in packets], data)


def render(model: FaceModel, wplus: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([model.render(wplus[i:i + batch]) for i in range(0, len(wplus), batch)])


# ----------------------------------------------------------------------------------------------------
# Quality


class Scorer:
    """PSNR, MS-SSIM and identity distance against the aligned original and the projection, reference
    descriptors computed once per clip (metrics.identity_distance's definition, fallback box included)."""

    def __init__(self, identity_every: int) -> None:
        self.identity_every = identity_every
        self.descriptor = FaceDescriptor()
        self._refs: dict[tuple[str, str], list[np.ndarray]] = {}

    def id_positions(self, clip: Clip) -> np.ndarray:
        return np.arange(0, len(clip.scored), self.identity_every)

    def prepare(self, clip: Clip) -> None:
        pos = self.id_positions(clip)
        assert clip.projected is not None
        self._refs[(clip.name, "aligned")] = [self.descriptor(f) for f in clip.crops[clip.scored][pos]]
        self._refs[(clip.name, "projected")] = [self.descriptor(f) for f in clip.projected[pos]]

    def projection_quality(self, clip: Clip) -> dict[str, np.ndarray]:
        """The projection G(E(x)) against the aligned original: the ceiling of every coded stream."""
        assert clip.projected is not None
        ref = clip.crops[clip.scored]
        ident = np.full(len(ref), np.nan)
        for p, a, b in zip(self.id_positions(clip), self._refs[(clip.name, "aligned")], self._refs[(clip.name, "projected")]):
            ident[p] = np.linalg.norm(a - b)
        same = np.zeros(len(ref))
        return {"psnr_vs_aligned": np.atleast_1d(psnr(ref, clip.projected)).astype(np.float64),
                "ms_ssim_vs_aligned": np.atleast_1d(ms_ssim(ref, clip.projected)).astype(np.float64),
                "identity_vs_aligned": ident, "psnr_vs_projected": np.full(len(ref), np.inf),
                "ms_ssim_vs_projected": same + 1.0, "identity_vs_projected": same}

    def score(self, clip: Clip, test: np.ndarray) -> dict[str, np.ndarray]:
        """Per scored frame values (identity: NaN on frames it is not computed on)."""
        assert clip.projected is not None
        pos = self.id_positions(clip)
        test_desc = [self.descriptor(f) for f in test[pos]]
        out = {}
        for ref_name, ref in (("aligned", clip.crops[clip.scored]), ("projected", clip.projected)):
            out[f"psnr_vs_{ref_name}"] = np.atleast_1d(psnr(ref, test)).astype(np.float64)
            out[f"ms_ssim_vs_{ref_name}"] = np.atleast_1d(ms_ssim(ref, test)).astype(np.float64)
            ident = np.full(len(test), np.nan)
            for p, a, b in zip(pos, self._refs[(clip.name, ref_name)], test_desc):
                ident[p] = np.linalg.norm(a - b)
            out[f"identity_vs_{ref_name}"] = ident
        return out


QUALITY_KEYS = [f"{m}_vs_{r}" for r in ("aligned", "projected") for m in ("psnr", "ms_ssim", "identity")]


def summarize_quality(per_frame: dict[str, list[np.ndarray]]) -> dict[str, float | None]:
    """Means of PSNR / MS-SSIM (finite values), median and mean of identity distance, over pooled frames."""
    out: dict[str, float | None] = {}
    for key in QUALITY_KEYS:
        v = np.concatenate(per_frame[key]) if per_frame.get(key) else np.empty(0)
        v = v[np.isfinite(v)]
        if key.startswith("identity"):
            out[f"{key}_median"] = float(np.median(v)) if len(v) else None
            out[f"{key}_mean"] = float(np.mean(v)) if len(v) else None
        else:
            out[key] = float(np.mean(v)) if len(v) else None
    return out


# ----------------------------------------------------------------------------------------------------
# Rows


@dataclass
class Tally:
    """One configuration's sums over clips, so the ALL row pools frames rather than averaging clip means."""

    frames: int = 0
    seconds: float = 0.0
    payload: float = 0.0
    record: float = 0.0
    file: float = 0.0
    wire: float = 0.0
    sq_err: float = 0.0
    elements: int = 0
    quality: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in QUALITY_KEYS})
    scored: int = 0

    def add(self, n: int, fps: float, payload: float, record: float, file: float, wire: float,
            sq_err: float | None, elements: int, quality: dict[str, np.ndarray] | None) -> None:
        self.frames += n
        self.seconds += n / fps
        self.payload, self.record, self.file, self.wire = (self.payload + payload, self.record + record,
                                                           self.file + file, self.wire + wire)
        if sq_err is not None:
            self.sq_err += sq_err
            self.elements += elements
        if quality is not None:
            for k in QUALITY_KEYS:
                self.quality[k].append(quality[k])
            self.scored += len(quality[QUALITY_KEYS[0]])

    def row(self) -> dict[str, Any]:
        rate = lambda b: 8 * b / self.seconds / 1000  # noqa: E731
        return {"frames": self.frames, "scored_frames": self.scored,
                "identity_frames": int(sum(np.isfinite(v).sum() for v in self.quality["identity_vs_aligned"])),
                "payload_kbps": rate(self.payload), "packet_kbps": rate(self.record),
                "file_kbps": rate(self.file) if self.file else None, "wire_kbps": rate(self.wire),
                "bits_per_frame": 8 * self.payload / self.frames,
                "latent_mse": self.sq_err / self.elements if self.elements else None,
                **summarize_quality(self.quality)}


def config_key(system: str, mode: str = "", g: int | None = None, step: float | None = None,
               target_kbps: float | None = None) -> dict[str, Any]:
    return {"system": system, "mode": mode, "g": None if g is None else g_label(g), "step": step,
            "target_kbps": target_kbps}


# ----------------------------------------------------------------------------------------------------
# The run


@dataclass
class Settings:
    quick: bool
    gs: list[int]
    all_steps_gs: list[int]  # g values coded at every Δ (others at the middle Δ)
    closed_intra_all_steps: bool
    codecs: list[str]
    kbps: list[float]
    max_frames: int | None
    max_clips: int | None
    score_every: int
    identity_every: int
    ablation_steps: int
    train_frames: int


def settings_from(args: argparse.Namespace) -> Settings:
    q = args.quick
    return Settings(
        quick=q, gs=args.g or list(QUICK_GS if q else FULL_GS),
        all_steps_gs=[HEADLINE_G] if q else list(args.g or FULL_GS), closed_intra_all_steps=not q,
        codecs=args.baselines or (["x265"] if q else list(PIXEL_CODECS)),
        kbps=args.kbps or list(QUICK_KBPS if q else FULL_KBPS),
        max_frames=args.max_frames if args.max_frames is not None else (100 if q else None),
        max_clips=args.max_clips if args.max_clips is not None else (3 if q else None),
        score_every=args.score_every or (4 if q else 1), identity_every=args.identity_every or (2 if q else 5),
        ablation_steps=args.ablation_steps if args.ablation_steps is not None else (0 if q else 300),
        train_frames=args.train_frames or (60 if q else 200))


def latent_configs(model: FaceModel, s: Settings) -> list[StreamParams]:
    mid = len(model.codec.steps) // 2
    every = range(len(model.codec.steps))
    out = [StreamParams("open", g, si) for g in s.gs for si in (every if g in s.all_steps_gs else [mid])]
    out += [StreamParams(m, 0, si) for m in ("closed", "intra") for si in (every if s.closed_intra_all_steps else [mid])]
    return out


# ----------------------------------------------------------------------------------------------------
# Per-clip work: one item of the engine's map (sganc_stream.engine), on this process or a Ray worker


@dataclass
class Worker:
    """What a worker keeps between clips: the model, the scorer (dlib descriptor loaded once), T(w) by content."""

    model: FaceModel
    scorer: Scorer
    proxies: dict[bytes, np.ndarray]

    @classmethod
    def start(cls, model: FaceModel, identity_every: int) -> Worker:
        return cls(model, Scorer(identity_every), {})


@dataclass
class ClipOutcome:
    """Everything the run needs from one clip; produced files come back as bytes and the driver writes them."""

    name: str
    identity: str
    fps: float
    frames: int
    scored: int
    wplus: np.ndarray  # (n, rows, width) E(x): naive coding and ablations
    projection: dict[str, np.ndarray]  # G(E(x)) against the aligned original
    latent_records: list[tuple[dict[str, Any], dict[str, Any]]]  # (config key, Tally.add values) per stream
    pixel_records: list[tuple[dict[str, Any], dict[str, Any]]]
    latent_kept: list[dict[str, Any]]  # kept-file entries, "file" relative to --keep
    pixel_kept: list[dict[str, Any]]
    files: dict[str, bytes]  # produced files by name relative to --keep (the driver writes them)
    per_frame_bits: dict[str, list[int]]
    drift: dict[str, np.ndarray]
    pipeline_match: bool
    boxes: dict[str, int]  # how the identity descriptor found its face rectangles
    timings: dict[str, float]


def clip_work(w: Worker, item: tuple[Path, str, str], s: Settings, configs: list[StreamParams]) -> ClipOutcome:
    """Align + E, projection, the latent codec grid and the pixel codecs of one clip (InputError: no usable face)."""
    path, name, identity = item
    model, scorer, codec = w.model, w.scorer, w.model.codec
    mid = len(codec.steps) // 2
    boxes = dict(scorer.descriptor.counts)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    clip = load_clip(model, path, s.max_frames, name, identity, w.proxies)
    timings["align_encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="sganc-bench-") as tmp:
        clip.scored = np.arange(0, len(clip.crops), s.score_every)
        clip.projected = render(model, clip.wplus[clip.scored])
        scorer.prepare(clip)
        aligned = Path(tmp) / f"{safe(clip.name)}.aligned.mkv"
        with VideoWriter(aligned, clip.fps, lossless=True) as writer:
            for f in clip.crops:
                writer.write(f)
        files[aligned.name] = aligned.read_bytes()
        timings["projection_s"] = time.perf_counter() - t0

        latent, latent_kept, per_frame_bits, drift, pipeline_match = [], [], {}, {}, True
        t0 = time.perf_counter()
        for p in configs:
            c = code_latents(model, clip, p)
            step = codec.steps[p.step_index]
            if (p.mode, p.g, p.step_index) == ("open", HEADLINE_G, mid):
                pipeline_match = clip.pipeline_payloads == c.payloads
            err = ((c.recon.astype(np.float64) - clip.wplus) ** 2)
            decoded = render(model, c.recon[clip.scored])
            quality = scorer.score(clip, decoded)
            label = p.mode if p.mode != "open" else f"open g={g_label(p.g)}"
            latent.append((config_key("sganc", p.mode, p.g if p.mode == "open" else None, step),
                           {"payload": c.payload.sum(), "record": c.record.sum(), "file": c.file_bytes,
                            "wire": c.wire.sum(), "sq_err": float(err.sum()), "elements": err.size,
                            "quality": quality}))
            if p.step_index == mid:
                per_frame_bits[label] = (8 * c.payload).tolist()
                if label in ("open g=never", f"open g={HEADLINE_G}", "closed"):
                    drift[label] = err.reshape(len(err), -1).mean(1)
            if p.mode != "open" and p.step_index == mid or p.mode == "open" and p.g == HEADLINE_G:
                fname = f"{safe(clip.name)}.{p.mode}{'' if p.mode != 'open' else '_g' + g_label(p.g)}_step{step:g}.sgnc"
                files[fname] = c.data
                latent_kept.append({"file": fname, "clip": clip.name,
                                    **config_key("sganc", p.mode, p.g if p.mode == "open" else None, step),
                                    "frames": len(clip.crops), "fps": clip.fps, "bytes": len(c.data),
                                    "file_kbps": kbps(len(c.data), len(clip.crops), clip.fps),
                                    "psnr_vs_aligned_scored": float(np.mean(quality["psnr_vs_aligned"]))})
        timings["latent_grid_s"] = time.perf_counter() - t0

        pixel, pixel_kept = [], []
        t0 = time.perf_counter()
        for codec_name in s.codecs:
            for target in s.kbps:
                r = code_pixels(clip.crops, codec_name, target, clip.fps)
                sizes = np.array(r.packet_bytes)
                quality = scorer.score(clip, r.decoded[clip.scored])
                pixel.append((config_key(codec_name, target_kbps=target),
                              {"payload": sizes.sum(), "record": sizes.sum(), "file": 0,
                               "wire": sum(rtp_wire_bytes(int(b)) for b in sizes), "sq_err": None, "elements": 0,
                               "quality": quality}))
                if codec_name == "x265":
                    out = keep_stream(r, codec_name, Path(tmp) / f"{safe(clip.name)}.x265_{target:g}kbps")
                    if out is not None:
                        files[out.name] = out.read_bytes()
                        pixel_kept.append({"file": out.name, "clip": clip.name,
                                           **config_key(codec_name, target_kbps=target),
                                           "frames": len(clip.crops), "fps": clip.fps, "bytes": len(r.stream),
                                           "payload_kbps": kbps(len(r.stream), len(clip.crops), clip.fps),
                                           "psnr_vs_aligned_scored": float(np.mean(quality["psnr_vs_aligned"]))})
        timings["pixel_codecs_s"] = time.perf_counter() - t0
    return ClipOutcome(clip.name, clip.identity, clip.fps, len(clip.crops), len(clip.scored), clip.wplus,
                       scorer.projection_quality(clip), latent, pixel, latent_kept, pixel_kept, files, per_frame_bits,
                       drift, pipeline_match, {k: v - boxes.get(k, 0) for k, v in scorer.descriptor.counts.items()},
                       timings)


def train_latents(w: Worker, item: tuple[Path, str, str, int]) -> np.ndarray:
    """E(x) of a training-identity clip, for the ablations."""
    path, name, identity, max_frames = item
    return load_clip(w.model, path, max_frames, name, identity, w.proxies).wplus


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = settings_from(args)
    t_start = time.perf_counter()
    engine = engine_from(args)
    model = load_face_model(args.model or default_face_model(), engine.driver_device())
    codec = model.codec
    mid = len(codec.steps) // 2
    keep = Path(args.keep) if args.keep else REPO / "out" / ("bitrate_vs_g_quick" if s.quick else "bitrate_vs_g")
    keep.mkdir(parents=True, exist_ok=True)
    hints = manifest_hints()
    paths = find_clips(args.clips)
    if s.max_clips is not None:
        # spread over the list so a quick run sees different recordings, not three takes of one
        idx = np.unique(np.linspace(0, len(paths) - 1, min(s.max_clips, len(paths))).round().astype(int))
        paths = [paths[i] for i in idx]
    items = [(path.absolute(), *clip_name_and_identity(path, hints)) for path in paths]  # workers: other cwd
    configs = latent_configs(model, s)
    outcomes: list[ClipOutcome | None] = [None] * len(items)
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with open_pool(engine, model, partial(Worker.start, identity_every=s.identity_every)) as pool:
        with tqdm(total=len(items), desc="per-clip work (align + E, latent grid, pixel codecs)", unit="clip",
                  mininterval=1.0) as bar:
            for i, out in pool.map(partial(clip_work, s=s, configs=configs), items):
                if isinstance(out, Failed):
                    skipped[items[i][1]] = out.error
                    tqdm.write(f"skipping {items[i][1]}: {out.error}")
                else:
                    for fname, data in out.files.items():  # written as they arrive, not held
                        (keep / fname).write_bytes(data)
                    out.files = {}
                    outcomes[i] = out
                bar.update()
        clips = [o for o in outcomes if o is not None]
        if not clips:
            sys.exit("error: no clip could be aligned and encoded")
        timings["per_clip_wall_s"] = time.perf_counter() - t0
        for key in ("align_encode_s", "projection_s", "latent_grid_s", "pixel_codecs_s"):  # summed over workers
            timings[key] = sum(c.timings[key] for c in clips)
        eval_ids = {c.identity for c in clips}
        train_paths = [SHARED_CLIPS / p for p in (args.train_clips or DEFAULT_TRAIN_CLIPS[: 4 if s.quick else None])]
        train_paths = [p for p in train_paths if p.is_file() and clip_name_and_identity(p, hints)[1] not in eval_ids]
        t_train = time.perf_counter()
        train_lat: list[np.ndarray | None] = [None] * len(train_paths)
        train_items = [(p, *clip_name_and_identity(p, hints), s.train_frames) for p in train_paths]
        for i, out in tqdm(pool.map(train_latents, train_items), total=len(train_items),
                           desc="align + encode training clips", unit="clip", mininterval=1.0):
            if isinstance(out, Failed):
                tqdm.write(f"skipping training clip {train_items[i][1]}: {out.error}")
            else:
                train_lat[i] = out
        t_train = time.perf_counter() - t_train

    projection = Tally()
    for clip in clips:
        projection.add(clip.frames, clip.fps, 0, 0, 0, 0, None, 0, clip.projection)
    tallies: dict[str, tuple[dict[str, Any], Tally]] = {}
    clip_rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []

    def record(key: dict[str, Any], clip: ClipOutcome, **values: Any) -> None:
        k = json.dumps(key, sort_keys=True)
        tally = tallies.setdefault(k, (key, Tally()))[1]
        one = Tally()
        for t in (tally, one):
            t.add(clip.frames, clip.fps, **values)
        clip_rows.append({"clip": clip.name, **key, **one.row()})

    # merged in clip order, latent grid before pixel codecs: the same sums and row order as one sequential run
    for part in ("latent", "pixel"):
        for clip in clips:
            for key, values in getattr(clip, f"{part}_records"):
                record(key, clip, **values)
            kept += [{**entry, "file": str(keep / entry["file"])} for entry in getattr(clip, f"{part}_kept")]
    per_frame_bits = clips[0].per_frame_bits
    drift: dict[str, list[np.ndarray]] = {}
    for clip in clips:
        for label, curve in clip.drift.items():
            drift.setdefault(label, []).append(curve)
    pipeline_match = [c.pipeline_match for c in clips]
    descriptor_boxes = {k: sum(c.boxes.get(k, 0) for c in clips) for k in clips[0].boxes}

    # --- naive latent coding
    t0 = time.perf_counter()
    naive_rows = []
    for step in NAIVE_STEPS:
        for comp in ("zlib", "bzip2"):
            frames = sum(len(c.wplus) for c in clips)
            res = [naive_code(c.wplus, step, comp) for c in clips]
            seconds = sum(len(c.wplus) / c.fps for c in clips)
            naive_rows.append({
                "step": step, "compressor": comp, "dtype": res[0]["dtype"],
                "bits_per_frame": sum(8 * r["bytes_per_frame"] * len(c.wplus) for r, c in zip(res, clips)) / frames,
                "clip_bits_per_frame": sum(8 * r["clip_bytes"] for r in res) / frames,
                "kbps": sum(8 * r["bytes_per_frame"] * len(c.wplus) for r, c in zip(res, clips)) / seconds / 1000,
                "latent_mse": sum(r["latent_mse"] * c.wplus.size for r, c in zip(res, clips)) / sum(c.wplus.size for c in clips)})
    raw_bits = 32 * codec.rows * codec.width
    timings["naive_s"] = time.perf_counter() - t0

    rows = [{"clip": "ALL", **key, **tally.row()} for key, tally in tallies.values()]

    # --- ablations
    t0 = time.perf_counter()
    ablations: dict[str, Any] = {}
    train_lat = [w for w in train_lat if w is not None]
    ablations["train_clips"] = [clip_name_and_identity(p, hints)[0] for p in train_paths]
    ablations["train_identities"] = sorted({clip_name_and_identity(p, hints)[1] for p in train_paths})
    ablations["eval_identities"] = sorted(eval_ids)
    evals = [c.wplus for c in clips]
    ablations["irwin_hall_vs_empirical"] = irwin_hall_vs_empirical(codec, train_lat, evals, [g for g in s.gs if g], mid,
                                                                  {})
    if s.ablation_steps > 0 and train_lat:
        models = train_variants(train_lat, s.ablation_steps, list(codec.steps), args.ablation_lambda)
        ablations["variants"] = {"train_steps": s.ablation_steps, "lambda": args.ablation_lambda,
                                 **compare_variants(models, evals, HEADLINE_G)}
    else:
        ablations["variants"] = {"skipped": "no training in --quick (use --ablation-steps N)" if s.quick
                                 else "no training-identity clips available"}
    ablations["drift"] = {label: nanmean_ragged(v).tolist() for label, v in drift.items()}
    timings["ablations_s"] = time.perf_counter() - t0 + t_train
    timings["total_s"] = time.perf_counter() - t_start

    result = {
        "model": {"path": str(args.model or default_face_model()), "model_id": model.model_id, "size": model.size,
                  "rows": codec.rows, "width": codec.width, "steps": codec.steps},
        "settings": {**s.__dict__, "fps_note": "rates use each clip's own frame rate",
                     "scored_frames": "every score_every-th coded frame; identity on every identity_every-th of those",
                     "wire_formula": "sganc: rd.wire_bytes (msgpack record + SCTP DATA chunks + 77 B per datagram); "
                                     "pixel codecs: rd.rtp_wire_bytes (+50 B per RTP packet of <= 1150 B)",
                     "headline_rate": "packet_kbps (payload + msgpack framing) vs the pixel codec's elementary stream"},
        "clips": [{"clip": c.name, "identity": c.identity, "frames": c.frames, "fps": c.fps,
                   "scored_frames": c.scored} for c in clips],
        "skipped_clips": skipped,
        "pipeline_recoding_matches": all(pipeline_match),
        "projection": {k: v for k, v in projection.row().items() if "vs_aligned" in k or k.endswith("frames")},
        "rows": rows, "clip_rows": clip_rows,
        "naive": {"rows": naive_rows, "raw_float32_bits_per_frame": raw_bits},
        "per_frame_bits": {"clip": clips[0].name, "step": codec.steps[mid], "bits": per_frame_bits},
        "ablations": ablations,
        "kept_files": kept,
        "descriptor_boxes": descriptor_boxes,
        "timings_s": timings,
    }
    result["headline"] = headlines(result)
    return result


def safe(name: str) -> str:
    return name.replace("/", "__")


def nanmean_ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """Mean over clips of per-frame curves of different lengths (frame t averages the clips that reach t)."""
    out = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return np.nanmean(out, axis=0)


# ----------------------------------------------------------------------------------------------------
# Headline figures


def _all(result: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if all(r.get(k) == v for k, v in match.items())]


def headlines(result: dict[str, Any]) -> dict[str, Any]:
    """Ours at g = 10 (each Δ; the headline is the middle Δ) vs x265 at equal median identity distance, and vs the
    naive latent coding at equal latent MSE. Ratio > 1: the other needs that many times our bits."""
    steps = result["model"]["steps"]
    mid = steps[len(steps) // 2]
    ours = sorted(_all(result, system="sganc", mode="open", g=str(HEADLINE_G)), key=lambda r: r["step"])
    out: dict[str, Any] = {"g": HEADLINE_G, "step": mid}
    x265 = [(r["payload_kbps"], r["identity_vs_aligned_median"]) for r in _all(result, system="x265")]
    naive = [(r["bits_per_frame"], r["latent_mse"]) for r in result["naive"]["rows"]]
    naive_clip = [(r["clip_bits_per_frame"], r["latent_mse"]) for r in result["naive"]["rows"]]
    per_step = []
    for r in ours:
        item = {"step": r["step"]}
        if x265:
            item["vs_x265_identity"] = headline_ratio((r["packet_kbps"], r["identity_vs_aligned_median"]), x265)
        item["vs_naive_latent_mse"] = headline_ratio((r["bits_per_frame"], r["latent_mse"]), naive)
        item["vs_naive_whole_clip_latent_mse"] = headline_ratio((r["bits_per_frame"], r["latent_mse"]), naive_clip)
        per_step.append(item)
    out["per_step"] = per_step
    at_mid = next((p for p in per_step if p["step"] == mid), None)
    if at_mid is not None:
        out["x265_over_ours_at_equal_identity"] = at_mid.get("vs_x265_identity", {}).get("ratio")
        out["naive_over_ours_at_equal_latent_mse"] = at_mid["vs_naive_latent_mse"]["ratio"]
    return out


# ----------------------------------------------------------------------------------------------------
# Outputs: CSV, Markdown, plots (all from the result dict, so --from-json can redo them)

CSV_FIELDS = ["clip", "system", "mode", "g", "step", "target_kbps", "frames", "scored_frames", "identity_frames",
              "payload_kbps", "packet_kbps", "file_kbps", "wire_kbps", "bits_per_frame", "latent_mse",
              *[k if not k.startswith("identity") else f"{k}_median" for k in QUALITY_KEYS],
              "identity_vs_aligned_mean", "identity_vs_projected_mean"]


def write_csv(result: dict[str, Any], path: Path) -> None:
    """Rows (ALL first, then per clip); '#' lines first carry command, commit and machine (pandas: comment='#')."""
    buf = io.StringIO()
    prov = result.get("provenance", {})
    for k in ("command", "commit", "date"):
        buf.write(f"# {k}: {prov.get(k, '')}\n")
    buf.write(f"# machine: {json.dumps(prov.get('machine', {}))}\n")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["rows"] + result["clip_rows"]:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_FIELDS})
    path.write_text(buf.getvalue())


def fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def markdown(result: dict[str, Any], name: str) -> str:
    prov = result.get("provenance", {})
    m = result["model"]
    s = result["settings"]
    h = result["headline"]
    frames = sum(c["frames"] for c in result["clips"])
    lines = [f"### Bitrate versus g ({'quick smoke run' if s['quick'] else 'full grid'})", "",
             f"`{prov.get('command', '')}` — commit `{prov.get('commit', '')}`, {prov.get('date', '')}; "
             f"model `{m['model_id'][:12]}…` ({m['size']} px, W+ {m['rows']}×{m['width']}, Δ presets "
             f"{', '.join(f'{x:g}' for x in m['steps'])}); {len(result['clips'])} clips, {frames} frames; "
             f"pixel metrics on 1 frame in {s['score_every']}, identity distance on 1 in {s['identity_every']} of those. "
             f"Results: `benchmarks/results/{name}.json` / `.csv`.", ""]
    lines += ["**Headline** (g = 10, middle Δ; rates are payload + packet framing for sganc, the elementary stream for "
              "x265; interpolated on the operational curves, never extrapolated):", ""]
    for item in h.get("per_step", []):
        for key, what in (("vs_x265_identity", "x265 at equal median identity distance"),
                          ("vs_naive_latent_mse", "naive W+ rounding + zlib/bzip2 per frame at equal latent MSE"),
                          ("vs_naive_whole_clip_latent_mse",
                           "naive W+ rounding + zlib/bzip2 of the whole clip at once (not streamable) at equal latent MSE")):
            if key not in item:
                continue
            x = item[key]
            unit = "kbps" if key == "vs_x265_identity" else "bits/frame"
            ratio = (f"**{x['ratio']:.2f}×** our rate ({fmt(x['other_kbps'], '.4g')} vs {fmt(x['our_kbps'], '.4g')} {unit})"
                     if x["ratio"] is not None else
                     f"no ratio, its curve does not reach ours: {x['status']}; ratio {x.get('ratio_bound') or '—'} "
                     f"(ours {fmt(x['our_kbps'], '.4g')} {unit})")
            lines.append(f"* Δ = {item['step']:g}: {what} (quality {fmt(x['quality'], '.4g')}) needs {ratio}")
    lines += ["", "| system | g / target | Δ | packet kbps | wire kbps | bits/frame | latent MSE | PSNR vs aligned | "
              "MS-SSIM vs aligned | identity vs aligned (median) | PSNR vs G(E(x)) | identity vs G(E(x)) (median) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"sganc": 0, **{k: i + 1 for i, k in enumerate(PIXEL_CODECS)}}
    gorder = {g_label(g): i for i, g in enumerate(FULL_GS)}
    mode_order = {"open": 0, "closed": 1, "intra": 2}
    for r in sorted(result["rows"], key=lambda r: (order.get(r["system"], 9), mode_order.get(r["mode"], 3),
                                                   gorder.get(r["g"], 99), r["step"] or 0, r["target_kbps"] or 0)):
        what = (f"open, g = {r['g']}" if r["mode"] == "open" else r["mode"]) if r["system"] == "sganc" \
            else f"{r['target_kbps']:g} kbps target"
        lines.append(f"| {r['system']} | {what} | {fmt(r['step'], 'g')} | {fmt(r['packet_kbps'], '.2f')} | "
                     f"{fmt(r['wire_kbps'], '.2f')} | {fmt(r['bits_per_frame'], '.0f')} | {fmt(r['latent_mse'], '.2e')} | "
                     f"{fmt(r['psnr_vs_aligned'], '.2f')} | {fmt(r['ms_ssim_vs_aligned'], '.4f')} | "
                     f"{fmt(r['identity_vs_aligned_median'], '.3f')} | {fmt(r['psnr_vs_projected'], '.2f')} | "
                     f"{fmt(r['identity_vs_projected_median'], '.3f')} |")
    for codec_name in PIXEL_CODECS:
        got = [r for r in result["rows"] if r["system"] == codec_name]
        if got:
            lines.append(f"\nLowest rate {codec_name} reached: {min(r['packet_kbps'] for r in got):.2f} kbps "
                         f"(targets down to {min(r['target_kbps'] for r in got):g} kbps).")
    proj = result["projection"]
    lines += ["", f"Projection G(E(x)) without coding, against the aligned original (the ceiling of every sganc row): "
              f"PSNR {fmt(proj.get('psnr_vs_aligned'), '.2f')} dB, MS-SSIM {fmt(proj.get('ms_ssim_vs_aligned'), '.4f')}, "
              f"median identity distance {fmt(proj.get('identity_vs_aligned_median'), '.3f')}."]
    kept = result.get("kept_files", [])[:4]
    if kept:
        lines += ["", "Some produced files, for independent measurement (all of them are listed in the JSON):", ""]
        for k in kept:
            rate = k.get("file_kbps", k.get("payload_kbps"))
            lines.append(f"* `{k['file']}`: {k['frames']} frames at {k['fps']:g} fps, {k['bytes']} bytes = {rate:.3f} kbps; "
                         f"mean PSNR vs the aligned crops on the scored frames {k['psnr_vs_aligned_scored']:.2f} dB")
    lines += ["", f"Naive latent coding (per frame; raw float32 W+ is {result['naive']['raw_float32_bits_per_frame']} "
              "bits/frame):", "", "| step | compressor | bits/frame | whole-clip bits/frame | latent MSE |", "|---|---|---|---|---|"]
    for r in result["naive"]["rows"]:
        lines.append(f"| {r['step']:g} | {r['compressor']} | {r['bits_per_frame']:.0f} | {r['clip_bits_per_frame']:.0f} | "
                     f"{r['latent_mse']:.2e} |")
    ab = result["ablations"]
    lines += ["", f"Ablations (trained codecs on training identities {', '.join(ab['train_identities']) or '—'}; "
              f"evaluated on {', '.join(ab['eval_identities'])}):", ""]
    var = ab["variants"]
    if "rows" in var:
        lines += [f"Stage groups vs one group, flow T vs none (open loop g = 10, {var['train_steps']} training steps "
                  f"each, λ = {var['lambda']:g}; ratios are bits relative to '{var['reference']}'):",
                  "", "| variant | Δ | bits/frame | latent MSE | stage-weighted MSE | bits / MSE vs reference at the same Δ | "
                  "bits vs reference at equal latent MSE | … at equal stage-weighted MSE |", "|---|---|---|---|---|---|---|---|"]

        def rel(r: dict[str, Any], suffix: str) -> str:
            v = r.get(f"bits_vs_reference{suffix}")
            return f"{v:.2f}×" if v else r.get(f"status{suffix}", "reference")

        for r in var["rows"]:
            same = (f"{r['bits_vs_reference_same_step']:.2f}× / {r['mse_vs_reference_same_step']:.2f}×"
                    if "bits_vs_reference_same_step" in r else "reference")
            lines.append(f"| {r['variant']} | {r['step']:g} | {r['bits_per_frame']:.0f} | {r['latent_mse']:.2e} | "
                         f"{fmt(r.get('weighted_latent_mse'), '.2e')} | {same} | {rel(r, '')} | {rel(r, '_weighted')} |")
    else:
        lines.append(f"Stage vs single / T vs identity: skipped ({var['skipped']}).")
    lines += ["", "Residual tables (ideal bits per residual frame; empirical = histogram of the training clips' residuals):",
              "", "| g | Δ | residual frames | Irwin–Hall | empirical | oracle (own histogram) | empirical vs IH | "
              "residual std | IH std |", "|---|---|---|---|---|---|---|---|---|"]
    for r in ab["irwin_hall_vs_empirical"]:
        if not r.get("residual_frames"):
            lines.append(f"| {r['g']} | — | 0 | — | — | — | — | — | — |")
            continue
        lines.append(f"| {r['g']} | {r['step']:g} | {r['residual_frames']} | {r['irwin_hall_bits_per_residual_frame']:.0f} | "
                     f"{fmt(r['empirical_bits_per_residual_frame'], '.0f')} | {r['oracle_bits_per_residual_frame']:.0f} | "
                     f"{fmt(None if r['empirical_vs_irwin_hall'] is None else 100 * r['empirical_vs_irwin_hall'], '+.1f')} % | "
                     f"{r['residual_std']:.3f} | {r['irwin_hall_std']:.3f} |")
    if ab.get("drift"):
        lines += ["", "Open- vs closed-loop drift (latent MSE against E(x), mean over clips, middle Δ):", "",
                  "| stream | frames 1–10 | frames 11–50 | frames 51+ |", "|---|---|---|---|"]
        for label, curve in ab["drift"].items():
            c = np.asarray(curve, dtype=np.float64)
            parts = [c[1:11], c[11:51], c[51:]]
            lines.append(f"| {label} | " + " | ".join(fmt(float(np.mean(p)) if len(p) else None, '.2e') for p in parts) + " |")
    t = result["timings_s"]
    lines += ["", f"Run time {t['total_s']:.0f} s (align + E {t['align_encode_s']:.0f} s, latent grid {t['latent_grid_s']:.0f} s, "
              f"pixel codecs {t['pixel_codecs_s']:.0f} s, ablations {t['ablations_s']:.0f} s); "
              f"re-coding matches the pipeline's packets: {result['pipeline_recoding_matches']}.",
              f"Plots: {', '.join(f'`{name}_{p}.png`' for p in PLOTS)}.", ""]
    return "\n".join(lines)


PLOTS = ("rd", "kbps_vs_g", "bits_over_time", "drift", "naive")


def plots(result: dict[str, Any], prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    rows = result["rows"]
    sg = [r for r in rows if r["system"] == "sganc"]
    prov = result.get("provenance", {})
    footer = f"{prov.get('command', '')} | commit {prov.get('commit', '')} | {prov.get('date', '')} | " \
             f"{prov.get('machine', {}).get('platform', '')}"
    # 1. rate–distortion per g (identity and PSNR vs aligned), with the pixel codecs
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, key, label in zip(axes, ("identity_vs_aligned_median", "psnr_vs_aligned", "ms_ssim_vs_aligned"),
                              ("median identity distance vs aligned (lower is better)", "PSNR vs aligned (dB)",
                               "MS-SSIM vs aligned")):
        groups: dict[str, list[dict]] = {}
        for r in sg:
            groups.setdefault(f"open g={r['g']}" if r["mode"] == "open" else r["mode"], []).append(r)
        for name in PIXEL_CODECS:
            if any(r["system"] == name for r in rows):
                groups[name] = [r for r in rows if r["system"] == name]
        for name, rs in groups.items():
            rs = sorted(rs, key=lambda r: r["packet_kbps"])
            pts = [(r["packet_kbps"], r[key]) for r in rs if r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), "o-" if name.startswith(("open", "closed", "intra")) else "s--", label=name, ms=4)
        ceiling = result["projection"].get(key)
        if ceiling is not None:
            ax.axhline(ceiling, color="k", ls=":", lw=1, label="projection G(E(x)) (no coding)")
        ax.set_xscale("log")
        ax.set_xlabel("kbps (packets: payload + framing; pixel codecs: elementary stream)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Rate–distortion per residual period g, and pixel codecs on the same aligned crops")
    fig.tight_layout()
    out.append(_save(fig, prefix, "rd", footer))
    # 2. kbps against g at fixed quality (fixed Δ; and at the latent MSE of g = 10, middle Δ, interpolated)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gs = sorted({r["g"] for r in sg if r["mode"] == "open"}, key=lambda g: (g == "never", int(g) if g != "never" else 0))
    xs = {g: i for i, g in enumerate(gs)}
    for step in sorted({r["step"] for r in sg}):
        pts = sorted((xs[r["g"]], r["packet_kbps"]) for r in sg if r["mode"] == "open" and r["step"] == step)
        if len(pts) > 1:
            ax.plot(*zip(*pts), "o--", label=f"Δ = {step:g}", alpha=0.7)
    target = next((r["latent_mse"] for r in sg if r["mode"] == "open" and r["g"] == str(HEADLINE_G)
                   and r["step"] == result["headline"]["step"]), None)
    if target is not None:
        from rd import rate_at_quality

        pts = []
        for g in gs:
            rate, _ = rate_at_quality([(r["packet_kbps"], r["latent_mse"]) for r in sg if r["mode"] == "open" and r["g"] == g], target)
            if rate is not None:
                pts.append((xs[g], rate))
        if pts:
            ax.plot(*zip(*pts), "ko-", lw=2, label=f"at latent MSE {target:.2e} (interpolated)")
    ax.set_xticks(range(len(gs)), gs)
    ax.set_xlabel("residual period g (open loop)")
    ax.set_ylabel("kbps (payload + framing)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Rate against g at fixed quality")
    fig.tight_layout()
    out.append(_save(fig, prefix, "kbps_vs_g", footer))
    # 3. per-frame bits over time
    pfb = result["per_frame_bits"]
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, bits in pfb["bits"].items():
        if label.startswith("open") or label == "closed":
            ax.plot(bits, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("payload bits")
    ax.set_title(f"Per-frame bits, {pfb['clip']}, Δ = {pfb['step']:g}: residual spikes every g frames")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "bits_over_time", footer))
    # 4. drift
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, curve in result["ablations"].get("drift", {}).items():
        ax.plot(curve, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("latent MSE vs E(x)")
    ax.set_title("Open-loop drift vs closed loop (mean over clips, middle Δ)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "drift", footer))
    # 5. naive latent coding vs ours (and the ablation codecs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for comp in ("zlib", "bzip2"):
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in result["naive"]["rows"] if r["compressor"] == comp)
        ax.plot(*zip(*pts), "s--", label=f"naive rounding + {comp} (per frame)")
        pts = sorted((r["latent_mse"], r["clip_bits_per_frame"]) for r in result["naive"]["rows"] if r["compressor"] == comp)
        ax.plot(*zip(*pts), "x:", label=f"naive rounding + {comp} (whole clip, not streamable)")
    for label in sorted({(r["g"], r["mode"]) for r in sg if r["mode"] != "open" or r["g"] == str(HEADLINE_G)}, key=str):
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in sg if (r["g"], r["mode"]) == label)
        ax.plot(*zip(*pts), "o-", label=f"sganc {label[1]}" + (f" g={label[0]}" if label[1] == "open" else ""))
    for v in {r["variant"] for r in result["ablations"].get("variants", {}).get("rows", [])}:
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in result["ablations"]["variants"]["rows"] if r["variant"] == v)
        ax.plot(*zip(*pts), "^:", label=f"ablation: {v} (g={HEADLINE_G})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent MSE vs E(x)")
    ax.set_ylabel("bits per frame")
    ax.set_title("Learned latent coding vs naive rounding + general-purpose compression")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "naive", footer))
    return out


def _save(fig: Any, prefix: Path, what: str, footer: str = "") -> Path:
    import matplotlib.pyplot as plt

    if footer:
        fig.text(0.005, 0.003, footer, fontsize=5.5, color="0.4", ha="left", va="bottom")
    path = prefix.with_name(f"{prefix.name}_{what}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], name: str) -> list[Path]:
    csv_path = RESULTS / f"{name}.csv"
    write_csv(result, csv_path)
    md_path = RESULTS / f"{name}.md"
    md_path.write_text(markdown(result, name))
    return [csv_path, md_path, *plots(result, RESULTS / name)]


README_BEGIN, README_END = "<!-- bitrate_vs_g:begin -->", "<!-- bitrate_vs_g:end -->"


def update_readme(readme: Path, md: str) -> bool:
    """Replace the text between the README's bitrate_vs_g markers with ``md``; False when there are no markers."""
    text = readme.read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    readme.write_text(text[: a + len(README_BEGIN)] + "\n" + md.strip() + "\n" + text[b:])
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke run: few clips, few g, x265 only (< 10 min)")
    ap.add_argument("--model", help="face model bundle (default: the embedded face model)")
    ap.add_argument("--clips", nargs="+", help="clip files or folders (default: the MEAD clips in ../shared)")
    ap.add_argument("--train-clips", nargs="+", help="clips (relative to ../shared/data/clips) of training identities")
    ap.add_argument("--g", type=int, nargs="+", help="residual periods (0 = never)")
    ap.add_argument("--baselines", nargs="+", choices=list(PIXEL_CODECS), help="pixel codecs")
    ap.add_argument("--kbps", type=float, nargs="+", help="pixel codec target bitrates")
    ap.add_argument("--max-frames", type=int, help="frames per clip (default: all; 100 with --quick)")
    ap.add_argument("--max-clips", type=int, help="clips (default: all; 3 with --quick)")
    ap.add_argument("--score-every", type=int, help="pixel metrics on every N-th frame (default 1; 4 with --quick)")
    ap.add_argument("--identity-every", type=int, help="identity on every N-th scored frame (default 5; 2 with --quick)")
    ap.add_argument("--ablation-steps", type=int, help="training steps per ablation codec (default 300; 0 with --quick)")
    ap.add_argument("--ablation-lambda", type=float, default=100.0, help="λ of the ablation codecs (default 100)")
    ap.add_argument("--train-frames", type=int, help="frames per training clip (default 200; 60 with --quick)")
    ap.add_argument("--keep", help="folder for the produced files (default: out/bitrate_vs_g[_quick])")
    ap.add_argument("--name", help="results name (default: bitrate_vs_g or bitrate_vs_g_quick)")
    ap.add_argument("--device", default="cpu", help="where E and G run: cpu or cuda (default: cpu)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in this process (Ray workers run floor(--cpus-per-worker))")
    add_engine_options(ap)
    ap.add_argument("--from-json", help="redo CSV, Markdown and plots from a results JSON; run nothing")
    ap.add_argument("--readme", help=f"also put the Markdown between {README_BEGIN} and {README_END} in this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        name = args.name or Path(args.from_json).stem
        written = write_outputs(result, name)
    else:
        name = args.name or ("bitrate_vs_g_quick" if args.quick else "bitrate_vs_g")
        try:
            path = write_result(name, run(args))
        except SgancError as exc:
            sys.exit(f"error: {exc}")
        result = json.loads(path.read_text())  # with provenance, as --from-json will see it
        written = [path, *write_outputs(result, name)]
        print(markdown(result, name))
    if args.readme and not update_readme(Path(args.readme), markdown(result, name)):
        print(f"note: {args.readme} has no {README_BEGIN} / {README_END} markers; left unchanged")
    print("\n".join(["wrote:", *map(str, written)]))
    return 0 if result["pipeline_recoding_matches"] else 1


if __name__ == "__main__":
    sys.exit(main())
