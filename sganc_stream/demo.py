"""The README's first command: a real talking face through the whole codec, with nothing to download.

With no input the demo codes the bundled public-domain clip (``sganc_stream.assets.DEMO_CLIP``: 4 s of a
presidential address) through alignment, E, T, quantization, rANS, T⁻¹, G and paste-back, and writes what a person
wants to look at: ``side_by_side.mp4`` (original frame | decoded face pasted back into it), ``contact_sheet.png``
(a few frames: original | aligned input | decoded crop | pasted back), ``demo.sgnc`` and ``report.json``.
A clip (``--input``) or a camera goes through the same path.
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

from sganc_stream.assets import demo_clip
from sganc_stream.bitstream.container import fps_in_range
from sganc_stream.errors import InputError
from sganc_stream.fileio import atomic_output, output_folder
from sganc_stream.pipeline import FaceModel, TimedFrame, TranscodeOptions, transcode_file, transcode_frames
from sganc_stream.report import write_json
from sganc_stream.video import VideoReader

SHEET_FRAMES = 4  # rows of the contact sheet
SHEET_HEIGHT = 256  # px per row


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

    return read(), float(fps) if fps_in_range(fps) else 25.0


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_CUBIC
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=interp)


def contact_sheet(side_by_side: Path, aligned_vs_decoded: Path, out: Path, rows: int = SHEET_FRAMES) -> None:
    """PNG of ``rows`` evenly spaced frames: original | aligned input | decoded crop | pasted back.

    Reads the two side-by-side videos a demo transcode wrote (frame | pasted, aligned | decoded).
    """
    with VideoReader(side_by_side) as a, VideoReader(aligned_vs_decoded) as b:
        pairs = list(zip(a, b))
    if not pairs:
        raise InputError(f"{side_by_side}: no frames to show")
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(rows, len(pairs))).round().astype(int))
    lines = []
    for k in picks:
        frame_pasted, crop_decoded = pairs[k]
        w, c = frame_pasted.shape[1] // 2, crop_decoded.shape[1] // 2
        parts = [frame_pasted[:, :w], crop_decoded[:, :c], crop_decoded[:, c:], frame_pasted[:, w:]]
        lines.append(np.hstack([_fit_height(p, SHEET_HEIGHT) for p in parts]))
    with atomic_output(out) as tmp:  # the temporary name keeps the .png suffix cv2 needs
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.vstack(lines), cv2.COLOR_RGB2BGR)):
            raise InputError(f"cannot write {out}")


def run_demo(model: FaceModel, outdir: str | os.PathLike[str], options: TranscodeOptions, *,
             input: str | os.PathLike[str] | None = None, camera: int | None = None,
             frames: int | None = None) -> dict[str, Any]:
    """Code a clip into ``outdir``; returns the report.

    Writes demo.sgnc, side_by_side.mp4 (frame | decoded face pasted back), aligned_vs_decoded.mp4 (aligned crop |
    decoded crop), contact_sheet.png and report.json.

    ``input``: a video (default: the bundled demo clip); ``camera``: a camera index instead; ``frames``: at most this
    many frames (default: the whole clip; 100 from a camera). Raises InputError for unreadable input or no face.
    """
    with output_folder(outdir) as out:  # removed again if this run made it and fails before writing anything
        aligned_vs_decoded = out / "aligned_vs_decoded.mp4"
        opts = replace(options, side_by_side=out / "side_by_side.mp4", aligned_vs_decoded=aligned_vs_decoded,
                       report=out / "report.json", quality=True, max_frames=frames)
        if camera is not None:
            source, cam_fps = camera_frames(camera, frames or 100)
            report = transcode_frames(model, source, cam_fps, out / "demo.sgnc", opts, name=f"camera {camera}",
                                      total=frames or 100)
        else:
            report = transcode_file(model, input if input is not None else demo_clip(), out / "demo.sgnc", opts)
        contact_sheet(out / "side_by_side.mp4", aligned_vs_decoded, out / "contact_sheet.png")
        report["outputs"]["contact_sheet"] = str(out / "contact_sheet.png")
        write_json(out / "report.json", report)  # again, now that it can name the contact sheet
    return report
