"""Bitrate versus residual period g, against pixel codecs and the naive latent coding, with ablations (issue #9).

    python benchmarks/bitrate_vs_g.py [--quick] [--model BUNDLE] [--clips PATH ...] [--keep DIR]
                                      [--residual-table auto|irwin_hall|empirical] [--inter-context temporal]
                                      [--drift-damping A] [--rounding-offset F]   # the commands' coding options
                                      [--engine local|ray [--address auto|HOST:PORT] [--workers N] ...]
    python benchmarks/bitrate_vs_g.py --from-json benchmarks/results/bitrate_vs_g.json   # tables and plots again

Each clip is aligned and encoded once, exactly as ``sganc-stream transcode`` does it (FrameEncoder: FFHQ
alignment, E on one frame at a time); then every system of bitrate_systems.py codes it at each of its operating
points through one interface (``System.points`` / ``System.code``): our latent codec at every (mode, g, Δ) (open
loop with g ∈ {1, 2, 5, 10, 20, 40, 80, never}, closed loop and intra-only), the pixel codecs at each target kbps,
and the naive latent coding at each rounding step. Every coding is measured the same way here. Rates: payload
(rANS bytes / elementary stream), packet (payload + msgpack framing, what an .sgnc file and the data channel carry),
file (the whole .sgnc, header and end packet included: what transcode reports) and wire (rtc.wire for packets,
rd.rtp_wire_bytes for pixel codecs). Where our bits go (packet type, coded part, stage group, W+ row, framing,
container) comes from the library's ``latent.breakdown``, as ``sganc-stream inspect --json`` shows it. Quality:
latent MSE against E(x) on every frame; PSNR, MS-SSIM and dlib identity distance of the decoded frames against the
aligned original and against the projection G(E(x)), on the scored frames (every ``--score-every``-th; identity on
every ``--identity-every``-th scored frame). Ablations are in ablations.py. Headline ratios are interpolated on the
operational rate–quality curves and never extrapolated (rd.py). Tables and plots: bitrate_report.py.

Writes benchmarks/results/bitrate_vs_g[_quick].{json,csv,md} and *.png, each JSON with command, commit and
machine. ``--quick``: 3 clips of at most 100 frames, g ∈ {2, 10, 40, never} (g = 10 at every Δ, the rest at the
middle Δ), x265 only, every 4th frame scored, no trained ablations — the CI smoke run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ablations import compare_variants, irwin_hall_vs_empirical, train_variants
from baselines import PIXEL_CODECS
from bitrate_report import FULL_GS, QUALITY_KEYS, README_BEGIN, README_END, headlines, markdown, update_readme, write_outputs
from bitrate_systems import (HEADLINE_G, REPO, SHARED_CLIPS, Clip, Coding, EncoderOptions, NaiveLatents, PixelCodec,
                             Point, Sganc, System, clip_name_and_identity, find_clips, load_clip, manifest_hints, safe)
from common import write_result
from rd import kbps
from sganc_stream.assets import default_face_model
from sganc_stream.cli.transcode import add_engine_options, engine_from
from sganc_stream.engine import Failed, open_pool
from sganc_stream.errors import SgancError
from sganc_stream.latent.breakdown import BitBreakdown
from sganc_stream.cli.options import add_context_argument, add_residual_argument
from sganc_stream.latent.codec import StreamParams
from sganc_stream.metrics import FaceDescriptor, ms_ssim, psnr
from sganc_stream.pipeline import FaceModel, load_face_model
from sganc_stream.video import VideoWriter

# Training-identity clips (other people than MEAD M030) for the ablation codecs and the empirical residual fit.
DEFAULT_TRAIN_CLIPS = ("styletalk/source_video/andrew_clip_1.mp4", "styletalk/source_video/reagan_clip1.mp4",
                       "styletalk/source_video/feifeili_clip1.mp4", "sadtalker_hdtf/WDA_KatieHill_000.mp4",
                       "iplap/129.mp4", "edtalk/mouth_source.mp4", "liveportrait/driving_d0.mp4",
                       "pcavs/Input/00002.mp4")
QUICK_GS = (2, 10, 40, 0)
FULL_KBPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_KBPS = (1, 4, 16, 64)
NAIVE_STEPS = (2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def render(model: FaceModel, wplus: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([model.render(wplus[i:i + batch]) for i in range(0, len(wplus), batch)])


# ----------------------------------------------------------------------------------------------------
# Quality and tallies


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
    residual: str  # --residual-table as the commands take it (auto: the model's empirical table where it has one)
    encoder: dict[str, Any]  # --inter-context --drift-damping --rounding-offset (EncoderOptions' fields)


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
        train_frames=args.train_frames or (60 if q else 200), residual=args.residual_table,
        encoder=asdict(EncoderOptions(args.inter_context, args.drift_damping, args.rounding_offset)))


def latent_configs(model: FaceModel, s: Settings) -> list[StreamParams]:
    mid = len(model.codec.steps) // 2
    every = range(len(model.codec.steps))
    out = [StreamParams("open", g, si) for g in s.gs for si in (every if g in s.all_steps_gs else [mid])]
    out += [StreamParams(m, 0, si) for m in ("closed", "intra") for si in (every if s.closed_intra_all_steps else [mid])]
    return out


def systems_for(model: FaceModel, s: Settings) -> list[System]:
    """Every system this run compares, in result order: our latent codec's grid, the pixel codecs, naive latents."""
    return [Sganc(model, latent_configs(model, s), s.residual, EncoderOptions(**s.encoder)), *(PixelCodec(c, s.kbps) for c in s.codecs),
            NaiveLatents(NAIVE_STEPS)]


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
class Record:
    """One clip at one operating point: the values Tally.add takes, and what only some systems have."""

    key: dict[str, Any]
    values: dict[str, Any]
    breakdown: BitBreakdown | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClipOutcome:
    """Everything the run needs from one clip; produced files come back as bytes and the driver writes them."""

    name: str
    identity: str
    fps: float
    frames: int
    scored: int
    wplus: np.ndarray  # (n, rows, width) E(x): ablations
    projection: dict[str, np.ndarray]  # G(E(x)) against the aligned original
    records: list[Record]  # every system's points, in system order
    kept: list[dict[str, Any]]  # kept-file entries, "file" relative to --keep
    files: dict[str, bytes]  # produced files by name relative to --keep (the driver writes them)
    per_frame_bits: dict[str, list[int]]
    drift: dict[str, np.ndarray]
    pipeline_match: bool
    boxes: dict[str, int]  # how the identity descriptor found its face rectangles
    timings: dict[str, float]


def measure(w: Worker, clip: Clip, system: System, point: Point, c: Coding) -> Record:
    """The same measurements for every system: rates from the coding's byte counts, latent MSE where it decodes to
    W+, pixel quality (rendering W+ through G) on the scored frames where the system is scored."""
    values: dict[str, Any] = {"payload": c.payload.sum(), "record": c.record.sum(), "file": c.file_bytes,
                              "wire": c.wire.sum(), "sq_err": None, "elements": 0, "quality": None}
    if c.wplus is not None:
        err = (np.asarray(c.wplus, dtype=np.float64) - clip.wplus) ** 2
        values["sq_err"], values["elements"] = float(err.sum()), err.size
    if system.scored:
        decoded = c.pixels[clip.scored] if c.pixels is not None else render(w.model, c.wplus[clip.scored])
        values["quality"] = w.scorer.score(clip, decoded)
    return Record(point.key(), values, c.breakdown,
                  {k: v for k, v in c.notes.items() if k == "dtype"})


def clip_work(w: Worker, item: tuple[Path, str, str], s: Settings) -> ClipOutcome:
    """Align + E and the projection of one clip, then every system at every point (InputError: no usable face)."""
    path, name, identity = item
    model, scorer = w.model, w.scorer
    mid = len(model.codec.steps) // 2
    boxes = dict(scorer.descriptor.counts)
    timings: dict[str, float] = {"latent_grid_s": 0.0, "pixel_codecs_s": 0.0, "naive_s": 0.0}
    t0 = time.perf_counter()
    clip = load_clip(model, path, s.max_frames, name, identity, w.proxies, s.residual, EncoderOptions(**s.encoder))
    timings["align_encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    files: dict[str, bytes] = {}
    clip.scored = np.arange(0, len(clip.crops), s.score_every)
    clip.projected = render(model, clip.wplus[clip.scored])
    scorer.prepare(clip)
    with tempfile.TemporaryDirectory(prefix="sganc-bench-") as tmp:
        aligned = Path(tmp) / f"{safe(clip.name)}.aligned.mkv"
        with VideoWriter(aligned, clip.fps, lossless=True) as writer:
            for f in clip.crops:
                writer.write(f)
        files[aligned.name] = aligned.read_bytes()
    timings["projection_s"] = time.perf_counter() - t0

    records, kept, per_frame_bits, drift, pipeline_match = [], [], {}, {}, True
    for system in systems_for(model, s):
        t0 = time.perf_counter()
        for point in system.points():
            c = system.code(clip, point)
            rec = measure(w, clip, system, point, c)
            records.append(rec)
            if system.name == "sganc":  # the latent grid's own figures: self-check, per-frame bits, drift
                if (point.mode, point.g, point.step_index) == ("open", HEADLINE_G, mid):
                    pipeline_match = clip.pipeline_payloads == c.notes["payloads"]
                if point.step_index == mid:
                    per_frame_bits[point.label] = (8 * c.payload).tolist()
                    if point.label in ("open g=never", f"open g={HEADLINE_G}", "closed"):
                        assert c.wplus is not None
                        drift[point.label] = ((c.wplus.astype(np.float64) - clip.wplus) ** 2).reshape(len(clip.wplus), -1).mean(1)
            if system.keeps(point) and c.data:
                fname = system.file_name(clip, point, c)
                files[fname] = c.data
                size = c.file_bytes or len(c.data)
                kept.append({"file": fname, "clip": clip.name, **point.key(), "frames": len(clip.crops), "fps": clip.fps,
                             "bytes": len(c.data),
                             "file_kbps" if c.file_bytes else "payload_kbps": kbps(size, len(clip.crops), clip.fps),
                             "psnr_vs_aligned_scored": float(np.mean(rec.values["quality"]["psnr_vs_aligned"]))})
        timings[system.timing] += time.perf_counter() - t0
    return ClipOutcome(clip.name, clip.identity, clip.fps, len(clip.crops), len(clip.scored), clip.wplus,
                       scorer.projection_quality(clip), records, kept, files, per_frame_bits, drift, pipeline_match,
                       {k: v - boxes.get(k, 0) for k, v in scorer.descriptor.counts.items()}, timings)


def train_latents(w: Worker, item: tuple[Path, str, str, int]) -> np.ndarray:
    """E(x) of a training-identity clip, for the ablations."""
    path, name, identity, max_frames = item
    return load_clip(w.model, path, max_frames, name, identity, w.proxies).wplus


# ----------------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = settings_from(args)
    t_start = time.perf_counter()
    engine = engine_from(args)
    model = load_face_model(args.model or default_face_model(), engine.driver_device())
    codec = model.codec
    s = replace(s, encoder=asdict(EncoderOptions(**s.encoder).resolved(codec)))  # the record names concrete choices
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
    outcomes: list[ClipOutcome | None] = [None] * len(items)
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with open_pool(engine, model, partial(Worker.start, identity_every=s.identity_every)) as pool:
        with tqdm(total=len(items), desc="per-clip work (align + E, every system at every point)", unit="clip",
                  mininterval=1.0) as bar:
            for i, out in pool.map(partial(clip_work, s=s), items):
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
        for key in ("align_encode_s", "projection_s", "latent_grid_s", "pixel_codecs_s", "naive_s"):  # summed over workers
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
    pooled: dict[str, tuple[dict[str, Any], BitBreakdown]] = {}
    notes: dict[str, dict[str, Any]] = {}
    clip_rows: list[dict[str, Any]] = []
    # merged system by system, each in clip order: the same sums and row order however the clips were spread
    for system_name in dict.fromkeys(r.key["system"] for r in clips[0].records):
        for clip in clips:
            for r in clip.records:
                if r.key["system"] != system_name:
                    continue
                k = json.dumps(r.key, sort_keys=True)
                tally = tallies.setdefault(k, (r.key, Tally()))[1]
                one = Tally()
                for t in (tally, one):
                    t.add(clip.frames, clip.fps, **r.values)
                if r.breakdown is not None:
                    pooled[k] = (r.key, pooled[k][1] + r.breakdown if k in pooled else r.breakdown)
                notes.setdefault(k, r.notes)
                if system_name != "naive":
                    clip_rows.append({"clip": clip.name, **r.key, **one.row()})
    kept = [{**entry, "file": str(keep / entry["file"])} for clip in clips for entry in clip.kept]
    per_frame_bits = clips[0].per_frame_bits
    drift: dict[str, list[np.ndarray]] = {}
    for clip in clips:
        for label, curve in clip.drift.items():
            drift.setdefault(label, []).append(curve)
    pipeline_match = [c.pipeline_match for c in clips]
    descriptor_boxes = {k: sum(c.boxes.get(k, 0) for c in clips) for k in clips[0].boxes}

    rows = [{"clip": "ALL", **key, **tally.row()} for key, tally in tallies.values() if key["system"] != "naive"]
    naive_rows = []
    for k, (key, tally) in tallies.items():
        if key["system"] == "naive":
            row = tally.row()
            naive_rows.append({"step": key["step"], "compressor": key["mode"], "dtype": notes[k]["dtype"],
                               "bits_per_frame": row["bits_per_frame"], "clip_bits_per_frame": 8 * tally.file / tally.frames,
                               "kbps": row["payload_kbps"], "latent_mse": row["latent_mse"]})
    raw_bits = 32 * codec.rows * codec.width

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
        "breakdown": [{**key, **b.to_dict()} for key, b in pooled.values()],
        "ablations": ablations,
        "kept_files": kept,
        "descriptor_boxes": descriptor_boxes,
        "timings_s": timings,
    }
    result["headline"] = headlines(result)
    return result


def nanmean_ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """Mean over clips of per-frame curves of different lengths (frame t averages the clips that reach t)."""
    out = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return np.nanmean(out, axis=0)


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
    add_residual_argument(ap)  # the commands' option and default
    add_context_argument(ap)  # --inter-context --drift-damping --rounding-offset: the commands' options and defaults
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
