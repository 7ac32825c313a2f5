"""Per-frame FFHQ alignment of a video: detect once, track, re-detect, smooth, and never fail on a faceless frame.

Detection (HOG) costs 10-40 ms, landmark fitting about 1 ms, so the face is detected once and then tracked: each
frame's landmarks are fitted in a box derived from the previous frame's landmarks. The detector runs again every
``redetect_every`` frames, or as soon as the tracked fit degrades: its rigid points (brows, nose, eyes) jump away,
beyond a similarity, from the previous frame's — a fit that slid onto background or another face. A frame with no
face keeps the last quad and is flagged NO_FACE; before any face has been seen, the quad is the centred square of
the frame (flag DEFAULT_QUAD too).

Which face, when there are several: the **main face** is the first one followed (the largest, by landmark
radius, at the first detection). The aligner stays on it while it is there. When it is gone and another face is
in view, the aligner follows that one (the largest) and looks for the main face again every ``SEEK_MAIN_EVERY``
frames, returning to it as soon as it is back. Faces are told apart by dlib's face descriptor
(:mod:`sganc_stream.face.identity`), computed only when a detection does not simply continue the track. A frame
from which on another person is followed than before carries the flag NEW_IDENTITY (a face that leaves and comes
back is the same person: no flag).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.crop import FaceCropper
from sganc_stream.face.ffhq_quad import Quad, quad_from_landmarks
from sganc_stream.face.identity import chip_descriptor, face_chip
from sganc_stream.face.landmarks import Box, LandmarkBackend, make_landmarks
from sganc_stream.face.smoothing import QuadSmoother
from sganc_stream.video import check_frame

RIGID = slice(17, 48)  # brows, nose, eyes: stable under expression, so their fit error flags a lost track
MAX_FIT_ERROR = 0.08  # rigid-point RMS change frame to frame beyond a similarity, in shape radii (real tracks: p99)
REDETECT_EVERY = 30  # frames
SEEK_MAIN_EVERY = 5  # frames between detections while another face than the main one is followed
# Descriptor distance below which a face found again is the person followed before. benchmarks/tracking_identity.py
# on 20 shared clips of 10 people: frames of one clip 0.10-0.41 apart, different people 0.48-1.03 (dlib's photo
# threshold 0.6 would call 10 % of the different-people pairs the same person).
SAME_TRACKED_PERSON = 0.44


class FaceFlags(enum.IntFlag):
    """How a frame's quad was obtained."""

    DETECTED = 1  # landmarks fitted in a fresh detection
    TRACKED = 2  # landmarks fitted in the box from the previous frame
    NO_FACE = 4  # no face found: quad held from the last face
    DEFAULT_QUAD = 8  # no face seen yet: quad is the centred square of the frame
    NEW_IDENTITY = 16  # from this frame on another person is followed than before (not on the first face)


class _Track:
    """The person a track follows: a face chip from its first detection, its descriptor once needed."""

    def __init__(self, chip: np.ndarray) -> None:
        self.chip = chip
        self._descriptor: np.ndarray | None = None

    @property
    def descriptor(self) -> np.ndarray:
        if self._descriptor is None:
            self._descriptor = chip_descriptor(self.chip)
        return self._descriptor

    def same_person(self, other: _Track) -> bool:
        return float(np.linalg.norm(self.descriptor - other.descriptor)) < SAME_TRACKED_PERSON


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
        """Forget the track, the main face, the held quad and the smoother state (next frame starts afresh)."""
        self._main: _Track | None = None  # the first face followed
        self._track: _Track | None = None  # the face followed now (or last)
        self._others: list[Box] = []  # faces found at the last detection that are not the main one
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

    @property
    def on_main(self) -> bool:
        """Whether the face followed now is the main face (True before any face)."""
        return self._track is self._main

    def _find_landmarks(self, frame: np.ndarray) -> tuple[np.ndarray | None, FaceFlags]:
        """Track if possible and trusted, otherwise detect; (None, 0) when neither finds a face."""
        every = self.redetect_every if self.on_main else min(self.redetect_every, SEEK_MAIN_EVERY)
        due = self._since_detect + 1 >= every
        if self._box is not None and not due:
            tracked = self._follow(frame)
            if tracked is not None:
                return tracked, FaceFlags.TRACKED
        detected, switched = self._detect(frame)
        if detected is not None:
            return detected, FaceFlags.DETECTED | (FaceFlags.NEW_IDENTITY if switched else FaceFlags(0))
        if self._box is not None and due:  # the detector missed a face the tracker still holds (e.g. turned head)
            tracked = self._follow(frame)
            if tracked is not None:
                self._since_detect = 0  # ask the detector again in redetect_every frames, not every frame
                return tracked, FaceFlags.TRACKED
        return None, FaceFlags(0)

    def _follow(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks in the box from the previous frame; None when the fit is not trusted."""
        assert self._box is not None and self._reference is not None
        landmarks = self.backend.landmarks(frame, self._box)
        self._since_detect += 1
        if _similarity_error(landmarks[RIGID], self._reference) > self.max_fit_error:
            return None
        self._reference = landmarks[RIGID].astype(np.float64)
        return landmarks

    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Detect, choose the face to follow (module doc); returns its landmarks and whether the person changed."""
        boxes = self.backend.detect(frame)
        if not boxes:
            return None, False
        fits = [self.backend.landmarks(frame, b) for b in boxes]
        here = [_iou(b, self._box) if self._box is not None else 0.0 for b in boxes]
        stay = int(np.argmax(here)) if max(here) > 0 else None  # the face we were following, still there
        pick, track = self._choose(frame, boxes, fits, stay)
        switched = track is not self._track and self._track is not None and not self._track.same_person(track)
        if pick != stay:
            self._lost = True  # a face somewhere else: start its quad afresh instead of sliding over
        self._track = track
        box, landmarks = boxes[pick], fits[pick]
        centre, radius = self._frame_of(landmarks)
        self._box_offsets = (np.asarray(box) - np.tile(centre, 2)) / radius
        self._reference = landmarks[RIGID].astype(np.float64)
        self._since_detect = 0
        return landmarks, switched

    def _choose(self, frame: np.ndarray, boxes: list[Box], fits: list[np.ndarray], stay: int | None
                ) -> tuple[int, _Track]:
        """Index of the face to follow and its track: the main face if it is there, else the one followed, else the
        largest. Descriptors are computed only for faces that may be the main one and are not known not to be."""
        if self._main is None:  # the first face: the largest becomes the main face
            pick = max(range(len(boxes)), key=lambda i: self._frame_of(fits[i])[1])
            self._main = _Track(face_chip(frame, fits[pick]))
            return pick, self._main
        if stay is not None and self.on_main:
            self._others = []  # what is known of other faces is only kept from one detection to the next
            return stay, self._main
        known = self._others + ([] if stay is None or self.on_main else [boxes[stay]])
        tracks: dict[int, _Track] = {}
        for i, b in enumerate(boxes):
            if any(_iou(b, k) > 0 for k in known):
                continue  # a face the last detection found not to be the main one
            tracks[i] = _Track(face_chip(frame, fits[i]))
            if tracks[i].same_person(self._main):
                self._others = [boxes[j] for j in range(len(boxes)) if j != i]
                return i, self._main
        self._others = list(boxes)
        if stay is not None:
            assert self._track is not None
            return stay, self._track
        pick = max(range(len(boxes)), key=lambda i: self._frame_of(fits[i])[1])
        return pick, tracks.get(pick) or _Track(face_chip(frame, fits[pick]))

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
