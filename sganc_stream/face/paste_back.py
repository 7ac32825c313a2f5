"""Put a (regenerated) aligned face back into its original frame: inverse of the crop, with a feathered edge.

The crop is warped back through the quad's affine map, only over the quad's bounding box, and blended with a mask
that is 1 inside the crop and ramps smoothly to 0 over its outer ``feather`` fraction, so the seam between the
generated square and the untouched frame is invisible.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.ffhq_quad import Quad, crop_to_frame

FEATHER = 0.1  # fraction of the crop side over which the mask fades out


def feather_mask(size: int, feather: float = FEATHER) -> np.ndarray:
    """(size, size) float32 mask: 1 in the middle, smoothstep to 0 across the outer ``feather`` x size pixels."""
    ramp = max(feather * size, 1.0)
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) + 0.5  # distance to the border
    t = np.clip(edge / ramp, 0.0, 1.0)
    profile = t * t * (3.0 - 2.0 * t)
    return np.minimum(profile[:, None], profile[None, :])


class PasteBack:
    """Pastes ``size`` crops back; keeps the mask for its size so each frame only warps and blends."""

    def __init__(self, size: int = 256, feather: float = FEATHER) -> None:
        self.size = size
        self.mask = feather_mask(size, feather)

    def __call__(self, frame: np.ndarray, crop: np.ndarray, quad: Quad) -> np.ndarray:
        """A copy of ``frame`` with ``crop`` (aligned by ``quad``) blended in; pixels outside the quad untouched."""
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
