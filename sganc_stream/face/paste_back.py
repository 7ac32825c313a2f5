"""Put a (regenerated) aligned face back into its original frame: inverse of the crop, blended over the face only.

The crop is warped back through the quad's affine map, only over the quad's bounding box, and blended with a mask
(:func:`face_mask`) that is 1 over the face and ramps smoothly to 0 around it, so the frame keeps its own background,
hair and shoulders, and no square seam shows where the generated crop's (softer, tinted) background would meet them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.ffhq_quad import Quad, crop_to_frame

FEATHER = 0.1  # fraction of the crop side over which the square's edge fades out
# The face region of an FFHQ-aligned crop, in crop-side units: a superellipse |dx/a|^p + |dy/b|^p = 1 around FACE_CENTRE,
# fully pasted out to radius 1 - FACE_BAND and fading to 0 at radius 1. Measured on the first frames of 11 of the shared
# clips (dlib's 68 landmarks mapped into their crops): brows, eyes, nose and mouth lie within radius 0.73 (all pasted),
# the jaw line at a median 0.74 (0.66-0.93), so the fade runs just outside the jaw, over ears, hair and neck.
FACE_CENTRE = (0.5, 0.58)
FACE_AXES = (0.36, 0.44)
FACE_POWER = 3.0
FACE_BAND = 0.25


def feather_mask(size: int, feather: float = FEATHER) -> np.ndarray:
    """(size, size) float32 mask: 1 in the middle, smoothstep to 0 across the outer ``feather`` x size pixels."""
    ramp = max(feather * size, 1.0)
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) + 0.5  # distance to the border
    t = np.clip(edge / ramp, 0.0, 1.0)
    profile = t * t * (3.0 - 2.0 * t)
    return np.minimum(profile[:, None], profile[None, :])


def face_mask(size: int, feather: float = FEATHER) -> np.ndarray:
    """(size, size) float32 blending mask of an FFHQ-aligned crop: 1 over the face, smoothstep to 0 across
    ``FACE_BAND`` of the superellipse radius (``FACE_CENTRE``, ``FACE_AXES``, ``FACE_POWER``, measured above), and
    never above :func:`feather_mask` (so it is 0 on the crop's border at any size)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u = np.abs((c[None, :] - FACE_CENTRE[0]) / FACE_AXES[0]) ** FACE_POWER
    v = np.abs((c[:, None] - FACE_CENTRE[1]) / FACE_AXES[1]) ** FACE_POWER
    t = np.clip((1.0 - (u + v) ** (1.0 / FACE_POWER)) / FACE_BAND, 0.0, 1.0)
    return np.minimum(t * t * (3.0 - 2.0 * t), feather_mask(size, feather)).astype(np.float32)


class PasteBack:
    """Pastes ``size`` crops back; keeps the mask for its size so each frame only warps and blends."""

    def __init__(self, size: int = 256, feather: float = FEATHER) -> None:
        self.size = size
        self.mask = face_mask(size, feather)

    def __call__(self, frame: np.ndarray, crop: np.ndarray, quad: Quad) -> np.ndarray:
        """A copy of ``frame`` (H, W, 3) uint8 with ``crop`` (``size``, ``size``, 3) uint8, aligned by ``quad``, blended
        in over the face (:func:`face_mask`); pixels outside the quad untouched. InputError for another crop."""
        if crop.shape != (self.size, self.size, 3) or crop.dtype != np.uint8:
            raise InputError(f"expected a uint8 ({self.size}, {self.size}, 3) crop, got {crop.dtype} {crop.shape}")
        out = frame.copy()
        height, width = frame.shape[:2]
        corners = quad.corners()
        x0, y0 = max(math.floor(corners[:, 0].min()), 0), max(math.floor(corners[:, 1].min()), 0)
        x1, y1 = min(math.ceil(corners[:, 0].max()) + 1, width), min(math.ceil(corners[:, 1].max()) + 1, height)
        if x1 <= x0 or y1 <= y0:
            return out
        to_roi = crop_to_frame(quad, self.size)
        to_roi[:, 2] -= (x0, y0)
        roi_size = (x1 - x0, y1 - y0)
        face = cv2.warpAffine(crop, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self.mask, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        roi = out[y0:y1, x0:x1]
        roi[...] = cv2.blendLinear(face, roi, alpha, 1.0 - alpha)
        return out


def paste_back(frame: np.ndarray, crop: np.ndarray, quad: Quad, feather: float = FEATHER) -> np.ndarray:
    """One-off :class:`PasteBack` (for video, build one PasteBack and reuse it)."""
    return PasteBack(crop.shape[0], feather)(frame, crop, quad)
