"""The README's first command: a talking-face clip through the whole codec, with nothing to download.

With no input the clip is made by the model's own generator: one identity (a truncated sample of the mapping
network) plus a smooth, looping walk in W+ around it, so the demo needs only the installed package. Its frames
are aligned faces by construction and are coded without the aligner; a clip (``--input``) or the camera goes
through alignment like any transcode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sganc_stream.errors import InputError
from sganc_stream.pipeline import (FaceModel, TimedFrame, TranscodeOptions, nominal_times, transcode_file,
                                   transcode_frames)

TRUNCATION = 0.7  # identity: w_avg + ψ (w - w_avg), a typical-looking face
MOTION = 0.35  # amplitude of the walk relative to a sample's distance from w_avg
ANCHORS = 4  # motion key poses per loop


@torch.inference_mode()
def talking_face_latents(model: FaceModel, frames: int, seed: int = 0) -> np.ndarray:
    """(frames, rows, width) float32: an identity plus a smooth periodic walk (cosine-interpolated key offsets)."""
    if frames < 1:
        raise InputError(f"--frames must be at least 1, got {frames}")
    g = model.generator
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1024 + 1 + ANCHORS, g.config.style_dim, generator=gen).to(model.device)
    w = g.mapping(z).float().cpu()
    w_avg, identity, anchors = w[:1024].mean(0), w[1024], w[1025:]
    base = w_avg + TRUNCATION * (identity - w_avg)
    offsets = MOTION * (anchors - w_avg)  # (ANCHORS, width)
    phase = np.arange(frames) / max(frames, 1) * ANCHORS  # one loop over the key poses
    k = np.floor(phase).astype(int)
    t = torch.from_numpy(0.5 - 0.5 * np.cos(np.pi * (phase - k))).float()[:, None]
    walk = (1 - t) * offsets[k % ANCHORS] + t * offsets[(k + 1) % ANCHORS]
    # Coarse rows (pose) move less than middle and fine rows (expression, mouth): a head that talks, not spins.
    rows = model.rows
    weight = torch.linspace(0.3, 1.0, rows)[None, :, None]
    wplus = base[None, None, :] + weight * walk[:, None, :]
    return wplus.numpy().astype(np.float32)


def render_clip(model: FaceModel, wplus: np.ndarray, batch: int = 1) -> Iterator[np.ndarray]:
    """Generated frames, ``batch`` at a time (memory: one batch)."""
    for start in range(0, len(wplus), batch):
        yield from model.render(wplus[start:start + batch])


def camera_frames(index: int, frames: int) -> tuple[Iterator[TimedFrame], float]:
    """Up to ``frames`` ``(RGB frame, capture time in seconds)`` from camera ``index`` and its nominal frame rate;
    InputError if it cannot be opened. A camera's real rate varies (exposure, load): its times are kept."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # OpenCV would log its own multi-line complaint about a missing camera
    try:
        cap = cv2.VideoCapture(index)
    finally:
        cv2.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"cannot open camera {index}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0

    def read() -> Iterator[TimedFrame]:
        try:
            for _ in range(frames):
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic()
        finally:
            cap.release()

    return read(), float(fps) if 0 < fps <= 1000 else 25.0


def run_demo(model: FaceModel, outdir: str | os.PathLike[str], options: TranscodeOptions, *,
             input: str | None = None, camera: int | None = None, frames: int = 48, fps: float = 25.0,
             seed: int = 0) -> dict[str, Any]:
    """Code a clip into ``outdir`` (demo.sgnc, side_by_side.mp4, report.json); returns the report.

    ``frames``: length of the generated or camera clip, and at most this many frames of an ``input`` clip.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    opts = replace(options, side_by_side=out / "side_by_side.mp4", report=out / "report.json", quality=True,
                   max_frames=frames)
    if input is not None:
        return transcode_file(model, input, out / "demo.sgnc", opts)
    if camera is not None:
        source, cam_fps = camera_frames(camera, frames)
        return transcode_frames(model, source, cam_fps, out / "demo.sgnc", opts, name=f"camera {camera}", total=frames)
    opts = replace(opts, align=False)
    clip = render_clip(model, talking_face_latents(model, frames, seed), opts.batch)
    return transcode_frames(model, nominal_times(clip, fps), fps, out / "demo.sgnc", opts, name="generated clip",
                            total=frames)
