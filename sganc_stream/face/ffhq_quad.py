"""The FFHQ crop geometry: 68 landmarks → oriented square quad → affine maps between frame and crop.

This is the recipe NVlabs used to build FFHQ (``recreate_aligned_images`` in ffhq-dataset): StyleGAN2 FFHQ generators
and their encoders only see faces placed this way, so every constant below is the recipe's, not a tuning knob.
Coordinates are pixel-index coordinates (pixel (0, 0)'s centre is (0, 0)), as dlib reports landmarks. A crop of
``size`` pixels samples the quad like the recipe's ``PIL.Image.QUAD`` transform: crop pixel (u, v) sits at
normalised position ((u + 0.5) / size, (v + 0.5) / size) inside the quad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# iBUG-68 indices the recipe uses.
EYE_LEFT = slice(36, 42)  # the subject's right eye, on the image's left
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT = 48
MOUTH_RIGHT = 54

# The recipe's geometry.
CENTRE_SHIFT = 0.1  # quad centre = eye midpoint + 0.1 x (eye midpoint → mouth midpoint)
EYE_SCALE = 2.0  # half-size = max(2.0 x eye distance, ...
MOUTH_SCALE = 1.8  # ... 1.8 x eye-to-mouth distance)


@dataclass(frozen=True)
class KeyPoints:
    """The three points the recipe reads from 68 landmarks."""

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth: np.ndarray

    @property
    def eye_mid(self) -> np.ndarray:
        return (self.eye_left + self.eye_right) * 0.5


def key_points(landmarks: np.ndarray) -> KeyPoints:
    """Eye centres (mean of each eye's 6 points) and the mouth-corner midpoint, as the recipe computes them."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return KeyPoints(lm[EYE_LEFT].mean(axis=0), lm[EYE_RIGHT].mean(axis=0), (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) * 0.5)


@dataclass(frozen=True)
class Quad:
    """An oriented square: centre (x, y), half side length and rotation (radians, image x axis → quad top edge)."""

    cx: float
    cy: float
    half: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """The recipe's ``x`` (centre → right edge) and ``y`` (centre → bottom edge) vectors."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([c, s]) * self.half, np.array([-s, c]) * self.half

    def corners(self) -> np.ndarray:
        """(4, 2) corners in the recipe's order: top-left, bottom-left, bottom-right, top-right."""
        x, y = self.axes()
        c = np.array([self.cx, self.cy])
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    @classmethod
    def from_corners(cls, corners: np.ndarray) -> Quad:
        """Inverse of :meth:`corners` (for quads read back from JSON)."""
        q = np.asarray(corners, dtype=np.float64)
        centre = q.mean(axis=0)
        right = (q[2] + q[3]) * 0.5 - centre
        return cls(float(centre[0]), float(centre[1]), float(np.hypot(*right)), math.atan2(right[1], right[0]))


def quad_from_landmarks(landmarks: np.ndarray) -> Quad:
    """The recipe: orientation averages the eye line and the normal to eye→mouth; size from the larger distance."""
    kp = key_points(landmarks)
    eye_to_eye = kp.eye_right - kp.eye_left
    eye_to_mouth = kp.mouth - kp.eye_mid
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # recipe: np.flipud(eye_to_mouth) * [-1, 1]
    half = max(np.hypot(*eye_to_eye) * EYE_SCALE, np.hypot(*eye_to_mouth) * MOUTH_SCALE)
    centre = kp.eye_mid + eye_to_mouth * CENTRE_SHIFT
    return Quad(float(centre[0]), float(centre[1]), float(half), math.atan2(x[1], x[0]))


def crop_to_frame(quad: Quad, size: int) -> np.ndarray:
    """2x3 affine matrix: crop pixel (u, v) → frame pixel, for a ``size``-pixel crop of ``quad``."""
    x, y = quad.axes()
    step_x, step_y = x * (2.0 / size), y * (2.0 / size)
    origin = quad.corners()[0] + 0.5 * (step_x + step_y)  # centre of crop pixel (0, 0)
    return np.column_stack([step_x, step_y, origin])


def frame_to_crop(quad: Quad, size: int) -> np.ndarray:
    """2x3 affine matrix: frame pixel → crop pixel (inverse of :func:`crop_to_frame`)."""
    forward = np.vstack([crop_to_frame(quad, size), [0.0, 0.0, 1.0]])
    return np.linalg.inv(forward)[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def canonical_quad(size: int) -> Quad:
    """Where the recipe puts the quad in its own crop: the whole crop, upright (the idempotence target)."""
    mid = (size - 1) * 0.5
    return Quad(mid, mid, size * 0.5, 0.0)
