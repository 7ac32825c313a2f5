"""Camera in, window or recording out, for the live call.

Sources yield ``(frame, capture_time)`` (uint8 RGB, ``time.time()`` seconds) like a camera: never queued, a
slow consumer gets the newest frame. A video file is a fake camera looped and paced in real time
(:class:`sganc_stream.video.PacedFrames` on the wall clock); a device goes through OpenCV's VideoCapture. Both are
read in the call's capture thread (``rtc.worker``), never on the event loop.

:class:`FrameSink` shows frames in an OpenCV window with an overlay (needs a display) and/or records them to a
video file (the decoded frames as they are, without overlay, so recordings can be measured), each at its capture
time, so dropped or late frames keep the call's timing; ``headless`` turns the window off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.video import PacedFrames, VideoWriter

WINDOW_SIDE = 384


class CameraFrames:
    """An OpenCV capture device (index like ``0`` or a path like ``/dev/video0``) as an async frame source."""

    def __init__(self, device: str, fps: float | None = None) -> None:
        self.device = int(device) if device.isdigit() else device
        self.capture = cv2.VideoCapture(self.device)
        if not self.capture.isOpened():
            raise InputError(f"cannot open camera {device!r}")
        if fps:
            self.capture.set(cv2.CAP_PROP_FPS, fps)
        reported = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps or (reported if 0 < reported <= 240 else 30.0))
        self.dropped = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                raise InputError(f"camera {self.device!r} stopped delivering frames")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.time()

    def close(self) -> None:
        self.capture.release()


def open_source(video: str | os.PathLike[str] | None, camera: str | None, fps: float | None = None
                ) -> PacedFrames | CameraFrames:
    """A looped, real-time-paced clip (``video``) or a capture device (``camera``)."""
    if video is not None:
        return PacedFrames(video, loop=True, clock=time.time)
    if camera is not None:
        return CameraFrames(camera, fps)
    raise InputError("no camera: pass --camera DEVICE or --video FILE")


def overlay(frame: np.ndarray, lines: list[str], side: int = WINDOW_SIDE) -> np.ndarray:
    """The frame scaled to ``side`` px (BGR, for OpenCV) with status lines drawn at the top."""
    h, w = frame.shape[:2]
    scale = side / max(h, w)
    bgr = cv2.cvtColor(cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR),
                       cv2.COLOR_RGB2BGR)
    for i, text in enumerate(lines):
        y = 18 + 18 * i
        cv2.putText(bgr, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bgr, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


def require_display(headless: bool) -> None:
    """Fail early, in one line, when a window is wanted and there is no screen."""
    if not headless and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        raise InputError("no display to open a window on: pass --headless (and --record OUT.mp4 to keep the video)")


class FrameSink:
    """Where received frames go: an OpenCV window (unless headless) and/or a video recording."""

    def __init__(self, *, record: Path | None, fps: float, headless: bool, title: str = "sganc call") -> None:
        require_display(headless)
        self.title, self.headless = title, headless
        self.writer = VideoWriter(record, fps) if record is not None else None
        self.frames = 0
        self._first_ms: float | None = None

    def show(self, frame: np.ndarray, lines: list[str], capture_ms: float) -> None:
        """Display ``frame`` and record it at its capture time (``capture_ms``, any clock; the first frame is 0)."""
        if self.writer is not None:
            self._first_ms = capture_ms if self._first_ms is None else self._first_ms
            self.writer.write(frame, (capture_ms - self._first_ms) / 1000)
        if not self.headless:
            cv2.imshow(self.title, overlay(frame, lines))
            cv2.waitKey(1)
        self.frames += 1

    def close(self) -> None:
        """Finish the recording (left untouched when no frame was ever received) and close the window."""
        if self.writer is not None:
            if self.writer.frame_count:
                self.writer.close()
            else:
                self.writer.abort()
        if not self.headless:
            cv2.destroyAllWindows()
