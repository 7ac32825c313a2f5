"""Transcode whole clip trees (MEAD, FILMPAC, any folder), resumably, with a per-clip CSV and a summary.

Each clip's outputs mirror its place in the tree: ``OUTDIR/<relative path without suffix>.sgnc`` and, written last
and atomically, ``.report.json`` (two clips that differ only in suffix keep it: ``interview.mp4.sgnc``,
``interview.mkv.sgnc``); a clip whose report exists with the same settings is done and is skipped when the
run is started again. A clip that fails (unreadable, no face) is listed with its error and retried by the next run.
``clips.csv`` and ``summary.json`` are rewritten as clips finish, at most every ``TABLES_EVERY_S`` seconds and
never more than a tenth of the time (one rewrite is O(clips): 2.6 s for 30 000 clips on a loaded 2-core machine, so
rewriting after every clip would be quadratic), and once more when the run ends or is interrupted.
Clips are coded by an engine (engine.py: this process, or Ray workers across a cluster); this process writes every
output, so the files do not depend on where a clip was coded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from sganc_stream.engine import EngineOptions, Failed, open_pool
from sganc_stream.errors import InputError
from sganc_stream.face.landmarks import make_landmarks
from sganc_stream.fileio import output_stems, write_bytes_atomic
from sganc_stream.report import write_json
from sganc_stream.video import VIDEO_INPUT_SUFFIXES

if TYPE_CHECKING:  # imported where clips are coded: the command line's --help needs none of torch
    from sganc_stream.pipeline import FaceModel, TranscodeOptions

LAYOUTS = ("mead", "filmpac", "folder")
# MEAD: <actor>/video/<view>/<emotion>/level_<k>/<nnn>.mp4 (audio/ and other trees are ignored)
MEAD_PATH = re.compile(r"^(?P<actor>[^/]+)/video/(?P<view>[^/]+)/(?P<emotion>[^/]+)/level_(?P<level>\d+)/"
                       r"(?P<take>\d+)\.mp4$", re.IGNORECASE)
# MEAD clips copied out of the tree under flat names, anywhere under the root: M030_front_angry_level3_001.mp4,
# M030_left_30_sad_level_1_012.mp4, or without the view, M030_sad_3_001.mp4 (MEAD's actors, views and emotions)
MEAD_NAME = re.compile(r"^(?P<actor>[MW]\d{3})_(?:(?P<view>front|down|top|left_30|left_60|right_30|right_60)_)?"
                       r"(?P<emotion>angry|contempt|disgusted|fear|happy|neutral|sad|surprised)_(?:level_?)?"
                       r"(?P<level>\d+)_(?P<take>\d+)$", re.IGNORECASE)
# FILMPAC clip names as in the paper, e.g. FP006734MD02: FP, a six-digit number, two letters, two digits
FILMPAC_NAME = re.compile(r"^(?P<clip>FP(?P<number>\d{6})(?P<variant>[A-Z]{2}\d{2}))$", re.IGNORECASE)
TABLES_EVERY_S = 10.0
CSV_FIELDS = ["clip", "status", "frames", "no_face_frames", "fps", "bytes", "kbps", "bits_per_frame_mean",
              "bits_per_frame_p95", "psnr_vs_aligned", "ms_ssim_vs_aligned", "identity_vs_aligned",
              "psnr_vs_projected", "ms_ssim_vs_projected", "identity_vs_projected", "encode_fps", "decode_fps",
              "error"]


@dataclass(frozen=True)
class Clip:
    """A clip to transcode: its file, its output stem relative to OUTDIR, and what the layout says about it."""

    path: Path
    rel: str  # relative path without suffix, '/'-separated
    fields: dict[str, str]


def _layout_fields(layout: str, rel: str, path: Path) -> dict[str, str] | None:
    """What the layout reads from a clip's place and name; None when the file fits the layout nowhere."""
    if layout == "mead":
        m = MEAD_PATH.match(rel) or MEAD_NAME.match(path.stem)
    elif layout == "filmpac":
        m = FILMPAC_NAME.match(path.stem)
    else:
        return {}
    return None if m is None else {k: v or "" for k, v in m.groupdict().items()}


def scan_clips(root: str | os.PathLike[str], layout: str) -> tuple[list[Clip], list[str]]:
    """(clips, video files that fit no clip pattern of the layout), both sorted by path relative to ``root``.

    InputError when the root is missing or holds no clip (the message lists files that did not fit).
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} ({', '.join(LAYOUTS)})")
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    found: list[tuple[Path, str, dict[str, str]]] = []
    unmatched: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_INPUT_SUFFIXES):
        rel = path.relative_to(root).as_posix()
        fields = _layout_fields(layout, rel, path)
        if fields is None:
            unmatched.append(rel)
        else:
            found.append((path, rel, fields))
    # interview.mp4 and interview.mkv side by side: each keeps its suffix in its output names, never one for both
    stems = output_stems([rel for _, rel, _ in found])
    clips = [Clip(path, stem, fields) for (path, _, fields), stem in zip(found, stems)]
    if not clips:
        what = {"mead": "MEAD clips (<actor>/video/<view>/<emotion>/level_<k>/<nnn>.mp4 or names like "
                        "M030_front_angry_level3_001.mp4)",
                "filmpac": "FILMPAC clips (names like FP006734MD02)", "folder": "video files"}[layout]
        others = f"; {len(unmatched)} other video file(s), e.g. {', '.join(unmatched[:3])}" if unmatched else ""
        raise InputError(f"no {what} under {root}{others}")
    return clips, unmatched


def find_clips(root: str | os.PathLike[str], layout: str) -> list[Clip]:
    """The clips of :func:`scan_clips` (files fitting no pattern left out)."""
    return scan_clips(root, layout)[0]


def clip_row(clip: Clip, report: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
    """One CSV row: the layout's fields, then the report's figures (empty where not measured)."""
    row: dict[str, Any] = {"clip": clip.rel, **clip.fields}
    if report is None:
        row.update(status="failed" if error else "pending", error=error)
        return row
    q = report.get("quality") or {}
    row.update(status="done", frames=report["frames"], no_face_frames=report["no_face_frames"], fps=report["fps"],
               bytes=report["bytes"], kbps=report["kbps"], bits_per_frame_mean=report["bits_per_frame"]["mean"],
               bits_per_frame_p95=report["bits_per_frame"]["p95"], encode_fps=report["speed"]["encode_fps"],
               decode_fps=report["speed"]["decode_fps"], error="")
    for ref in ("aligned", "projected"):
        part = q.get(f"vs_{ref}") or {}
        row[f"psnr_vs_{ref}"] = part.get("psnr")
        row[f"ms_ssim_vs_{ref}"] = part.get("ms_ssim")
        row[f"identity_vs_{ref}"] = part.get("identity_distance")
    return row


def _refine_settings(options: TranscodeOptions) -> Any:
    from sganc_stream.refine import refine_settings

    return refine_settings(options.refine)


def _settings(model: FaceModel, options: TranscodeOptions) -> dict[str, Any]:
    """What makes a finished clip reusable on resume: the model and the coding and measuring settings."""
    p = options.params
    return {"model_id": model.model_id, "mode": p.mode, "g": p.g, "step_index": p.step_index,
            "keyframe_interval": p.keyframe_interval, "max_frames": options.max_frames,
            "quality": options.quality, "identity_every": options.identity_every,
            "refine": _refine_settings(options),
            **({"residual": p.residual} if p.residual != "irwin_hall" else {})}  # absent: earlier runs still resume


def _done(report_path: Path, sgnc: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not (report_path.is_file() and sgnc.is_file()):
        return None
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return None
    return report if report.get("settings") == settings and report.get("bytes") == sgnc.stat().st_size else None


def transcode_dataset(model: FaceModel, root: str | os.PathLike[str], outdir: str | os.PathLike[str], layout: str,
                      options: TranscodeOptions, *, limit: int | None = None,
                      on_clip: Callable[[Clip, str], None] | None = None,
                      engine: EngineOptions = EngineOptions()) -> dict[str, Any]:
    """Transcode every clip (resuming), write ``clips.csv`` and ``summary.json`` in ``outdir``; returns the summary.

    ``on_clip(clip, status)`` is told each clip's outcome ('done', 'skipped' or 'failed: ...'), finished clips
    first. ``engine`` says where clips are coded (engine.py); this process writes every output as results arrive,
    so the files are the same whichever engine coded them. ``options.progress`` shows one bar over the clips. Video
    files that fit no clip pattern of the layout are listed in the summary's ``unmatched``.
    """
    clips, unmatched = scan_clips(root, layout)
    clips = clips[:limit]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    settings = _settings(model, options)
    reports: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    counts = {"done": 0, "skipped": 0, "failed": 0}
    todo = []
    for clip in clips:
        previous = _done(outdir / f"{clip.rel}.report.json", outdir / f"{clip.rel}.sgnc", settings)
        if previous is None:
            todo.append(replace(clip, path=clip.path.absolute()))  # workers may run in another folder
            continue
        reports[clip.rel] = previous
        counts["skipped"] += 1
        if on_clip is not None:
            on_clip(clip, "skipped")
    summary = _write_tables(outdir, clips, reports, errors, layout, root, settings, counts, unmatched)
    if not todo:
        return summary
    job = replace(options, report=None, progress=False)
    written, cost = time.monotonic(), 0.0
    try:
        with open_pool(engine, model, partial(_clip_worker, options=job)) as pool, \
                tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc="transcode-dataset",
                     disable=not options.progress) as bar:
            for i, result in pool.map(transcode_clip, todo):
                clip = todo[i]
                if isinstance(result, Failed):
                    errors[clip.rel], status = result.error, f"failed: {result.error}"
                else:
                    sgnc, report = outdir / f"{clip.rel}.sgnc", result[1]
                    sgnc.parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(sgnc, result[0])
                    report["outputs"]["sgnc"] = str(sgnc)
                    report["settings"] = settings
                    write_json(outdir / f"{clip.rel}.report.json", report)  # last: its presence marks the clip done
                    reports[clip.rel], status = report, "done"
                counts[status.split(":")[0]] += 1
                bar.update()
                if on_clip is not None:
                    on_clip(clip, status)
                if time.monotonic() - written >= max(TABLES_EVERY_S, 10 * cost):
                    t0 = time.monotonic()
                    _write_tables(outdir, clips, reports, errors, layout, root, settings, counts, unmatched)
                    written = time.monotonic()
                    cost = written - t0
    finally:  # at the end, and when interrupted
        summary = _write_tables(outdir, clips, reports, errors, layout, root, settings, counts, unmatched)
    return summary


def _clip_worker(model: FaceModel, options: TranscodeOptions) -> tuple[FaceModel, TranscodeOptions]:
    """A worker's state: the model and the options with the landmark detector built once."""
    landmarks = make_landmarks(options.landmarks) if isinstance(options.landmarks, str) else options.landmarks
    return model, replace(options, landmarks=landmarks)


def transcode_clip(worker: tuple[FaceModel, TranscodeOptions], clip: Clip) -> tuple[bytes, dict[str, Any]]:
    """One clip on a worker: the .sgnc file's bytes and the report (its ``outputs`` name a temporary file)."""
    from sganc_stream.pipeline import transcode_file

    model, options = worker
    with tempfile.TemporaryDirectory(prefix="sganc-clip-") as tmp:
        out = Path(tmp) / "clip.sgnc"
        report = transcode_file(model, clip.path, out, options)
        return out.read_bytes(), report


def _write_tables(outdir: Path, clips: list[Clip], reports: dict[str, dict[str, Any]], errors: dict[str, str],
                  layout: str, root: str | os.PathLike[str], settings: dict[str, Any],
                  counts: dict[str, int], unmatched: list[str]) -> dict[str, Any]:
    rows = [clip_row(c, reports.get(c.rel), errors.get(c.rel, "")) for c in clips]
    extra = sorted({k for c in clips for k in c.fields})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["clip", *extra, *CSV_FIELDS[1:]], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    write_bytes_atomic(outdir / "clips.csv", buf.getvalue().encode())
    done = [reports[c.rel] for c in clips if c.rel in reports]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get("status") == "done" and isinstance(r.get(key), (int, float))]
        return float(np.mean(vals)) if vals else None

    frames = sum(r["frames"] for r in done)
    summary = {
        "root": str(root), "layout": layout, "settings": settings,
        "clips": len(clips), "done": len(done), "failed": len(errors),
        "pending": len(clips) - len(done) - len(errors),
        "this_run": counts,
        "frames": frames,
        "bytes": sum(r["bytes"] for r in done),
        # rate over all frames of all clips, each at its own frame rate
        "kbps": (sum(8 * r["bytes"] / 1000 for r in done) / sum(r["frames"] / r["fps"] for r in done)) if done else None,
        "mean_clip_kbps": mean("kbps"),
        "psnr_vs_aligned": mean("psnr_vs_aligned"), "ms_ssim_vs_aligned": mean("ms_ssim_vs_aligned"),
        "identity_vs_aligned": mean("identity_vs_aligned"), "psnr_vs_projected": mean("psnr_vs_projected"),
        "ms_ssim_vs_projected": mean("ms_ssim_vs_projected"), "identity_vs_projected": mean("identity_vs_projected"),
        "errors": errors,
        "unmatched": unmatched,  # video files under root that fit no clip pattern of the layout: not coded
    }
    write_json(outdir / "summary.json", summary)
    return summary
