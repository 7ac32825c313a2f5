"""Per-frame FFHQ alignment of a video: detect once, track, re-detect, smooth, and never fail on a faceless frame.

Detection (HOG) costs 10-40 ms, landmark fitting about 1 ms, so the face is detected once and then tracked: each
frame's landmarks are fitted in a box derived from the previous frame's landmarks. The detector runs again every
``redetect_every`` frames, or as soon as the tracked fit degrades: its rigid points (brows, nose, eyes) jump away,
beyond a similarity, from the previous frame's — a fit that slid onto background or another face. A frame with no
face keeps the last quad and is flagged NO_FACE; before any face has been seen, the quad is the centred square of
the frame (flag DEFAULT_QUAD too).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.crop import FaceCropper
from sganc_stream.face.ffhq_quad import Quad, quad_from_landmarks
from sganc_stream.face.landmarks import Box, LandmarkBackend, make_landmarks
from sganc_stream.face.smoothing import QuadSmoother
from sganc_stream.video import check_frame

RIGID = slice(17, 48)  # brows, nose, eyes: stable under expression, so their fit error flags a lost track
MAX_FIT_ERROR = 0.08  # rigid-point RMS change frame to frame beyond a similarity, in shape radii (real tracks: p99)
REDETECT_EVERY = 30  # frames


class FaceFlags(enum.IntFlag):
    """How a frame's quad was obtained."""

    DETECTED = 1  # landmarks fitted in a fresh detection
    TRACKED = 2  # landmarks fitted in the box from the previous frame
    NO_FACE = 4  # no face found: quad held from the last face
    DEFAULT_QUAD = 8  # no face seen yet: quad is the centred square of the frame


@dataclass(frozen=True)
class AlignedFace:
    """One frame's result: the aligned crop, the (smoothed) quad it was cut from, flags, raw landmarks."""

    crop: np.ndarray  # (size, size, 3) uint8 RGB
    quad: Quad  # in frame pixels; paste_back() needs it
    flags: FaceFlags
    landmarks: np.ndarray | None  # (68, 2) frame pixels, unsmoothed; None with NO_FACE


def _similarity_error(points: np.ndarray, reference: np.ndarray) -> float:
    """RMS distance between points and reference after the best similarity fit, relative to the reference's size."""
    p = points - points.mean(axis=0)
    r = reference - reference.mean(axis=0)
    radius = np.sqrt((r ** 2).sum() / len(r))
    # best rotation+scale of p onto r, as a complex least-squares fit
    pc, rc = p[:, 0] + 1j * p[:, 1], r[:, 0] + 1j * r[:, 1]
    scale = np.vdot(pc, rc) / max(np.vdot(pc, pc).real, 1e-12)
    return float(np.sqrt(np.mean(np.abs(pc * scale - rc) ** 2)) / max(radius, 1e-12))


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class VideoAligner:
    """Aligns successive frames of one video to FFHQ crops of ``size`` pixels.

    ``smoothing=False`` gives the raw per-frame recipe quad; ``redetect_every=1`` with ``reset()`` between images
    aligns unrelated stills. Frames are uint8 RGB (H, W, 3); ``timestamp`` (seconds) overrides the 1/fps step.
    """

    def __init__(self, size: int = 256, landmarks: str | LandmarkBackend = "dlib", *, smoothing: bool = True,
                 fps: float = 25.0, redetect_every: int = REDETECT_EVERY, max_fit_error: float = MAX_FIT_ERROR) -> None:
        if redetect_every < 1:
            raise InputError(f"redetect_every must be at least 1, got {redetect_every}")
        if fps <= 0:
            raise InputError(f"frame rate must be positive, got {fps}")
        self.size = size
        self.backend = make_landmarks(landmarks) if isinstance(landmarks, str) else landmarks
        self.cropper = FaceCropper(size)
        self.smoother = QuadSmoother() if smoothing else None
        self.frame_step = 1.0 / fps
        self.redetect_every = redetect_every
        self.max_fit_error = max_fit_error
        self.reset()

    def reset(self) -> None:
        """Forget the track, the held quad and the smoother state (next frame starts afresh)."""
        self._box: Box | None = None
        self._box_offsets = np.zeros(4)
        self._reference: np.ndarray | None = None
        self._since_detect = 0
        self._quad: Quad | None = None
        self._last_time: float | None = None
        self._lost = True
        self._quad_is_default = False
        if self.smoother is not None:
            self.smoother.reset()

    def align(self, frame: np.ndarray, timestamp: float | None = None) -> AlignedFace:
        """The next frame's aligned crop, its quad and how it was found; never raises for a faceless frame."""
        frame = check_frame(frame)
        landmarks, flags = self._find_landmarks(frame)
        dt = self.frame_step if timestamp is None or self._last_time is None else timestamp - self._last_time
        self._last_time = timestamp
        if landmarks is None:
            self._box, self._lost = None, True
            if self._quad is None:
                height, width = frame.shape[:2]
                self._quad = Quad((width - 1) * 0.5, (height - 1) * 0.5, min(width, height) * 0.5, 0.0)
                self._quad_is_default = True
            flags = FaceFlags.NO_FACE | (FaceFlags.DEFAULT_QUAD if self._quad_is_default else FaceFlags(0))
        else:
            self._box = self._box_from(landmarks)
            quad = quad_from_landmarks(landmarks)
            if self.smoother is not None:
                if self._lost:
                    self.smoother.reset()
                quad = self.smoother(quad, dt)
            self._quad, self._lost, self._quad_is_default = quad, False, False
        return AlignedFace(self.cropper(frame, self._quad), self._quad, flags, landmarks)

    def _find_landmarks(self, frame: np.ndarray) -> tuple[np.ndarray | None, FaceFlags]:
        """Track if possible and trusted, otherwise detect; (None, 0) when neither finds a face."""
        due = self._since_detect + 1 >= self.redetect_every
        if self._box is not None and not due:
            tracked = self._track(frame)
            if tracked is not None:
                return tracked, FaceFlags.TRACKED
        detected = self._detect(frame)
        if detected is not None:
            return detected, FaceFlags.DETECTED
        if self._box is not None and due:  # the detector missed a face the tracker still holds (e.g. turned head)
            tracked = self._track(frame)
            if tracked is not None:
                self._since_detect = 0  # ask the detector again in redetect_every frames, not every frame
                return tracked, FaceFlags.TRACKED
        return None, FaceFlags(0)

    def _track(self, frame: np.ndarray) -> np.ndarray | None:
        assert self._box is not None and self._reference is not None
        landmarks = self.backend.landmarks(frame, self._box)
        self._since_detect += 1
        if _similarity_error(landmarks[RIGID], self._reference) > self.max_fit_error:
            return None
        self._reference = landmarks[RIGID].astype(np.float64)
        return landmarks

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        boxes = self.backend.detect(frame)
        if not boxes:
            return None
        if self._box is not None and max(_iou(b, self._box) for b in boxes) > 0:
            box = max(boxes, key=lambda b: _iou(b, self._box))  # stay on the face we were following
        else:
            box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            self._lost = True  # a face somewhere else: start its quad afresh instead of sliding over
        landmarks = self.backend.landmarks(frame, box)
        centre, radius = self._frame_of(landmarks)
        self._box_offsets = (np.asarray(box) - np.tile(centre, 2)) / radius
        self._reference = landmarks[RIGID].astype(np.float64)
        self._since_detect = 0
        return landmarks

    @staticmethod
    def _frame_of(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
        """Landmark centroid and RMS radius: the frame the detector box is remembered in."""
        centre = landmarks.mean(axis=0)
        return centre, float(np.sqrt(((landmarks - centre) ** 2).sum(axis=1).mean()))

    def _box_from(self, landmarks: np.ndarray) -> Box:
        """The box the detector would give for these landmarks (as it did, relative to them, at detection)."""
        centre, radius = self._frame_of(landmarks)
        left, top, right, bottom = np.tile(centre, 2) + self._box_offsets * radius
        return float(left), float(top), float(right), float(bottom)
