"""Cut an FFHQ quad out of a frame and resample it to the model's resolution, as the recipe does.

Recipe steps, with OpenCV doing the work: area-shrink by an integer factor when the quad is over 2x the output size
(the recipe: over 4x); where the quad leaves the frame, pad by reflection, blur the padding (sigma 0.02 x quad size)
and fade it towards the median colour; then sample the quad bilinearly — at 2x the output resolution, area-averaged
down, when the quad is over 1.5x the output (the recipe samples at 4096 px and downsizes with an antialiasing filter).
Only the pixels the final warp reads are blended, so a face touching the frame edge stays cheap. Geometry is exact:
crop pixel (u, v) is ``ffhq_quad.crop_to_frame(quad, size) @ (u, v, 1)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.ffhq_quad import Quad, crop_to_frame

SUPERSAMPLE_ABOVE = 1.5  # quad/output ratio above which the quad is sampled at 2x and area-averaged


class FaceCropper:
    """Crops quads to ``size`` x ``size`` uint8 RGB; keeps its 2x sampling buffer between frames."""

    def __init__(self, size: int = 256) -> None:
        if size < 8:
            raise InputError(f"crop size must be at least 8 pixels, got {size}")
        self.size = size
        self._double = np.empty((2 * size, 2 * size, 3), dtype=np.uint8)

    def __call__(self, frame: np.ndarray, quad: Quad) -> np.ndarray:
        """A new (size, size, 3) crop of ``quad`` from ``frame`` (uint8 RGB)."""
        qsize = 2.0 * quad.half
        shrink = math.ceil(qsize / (2.0 * self.size))  # afterwards the quad is at most 2x the output
        image, to_image = _shrunk_roi(frame, quad, shrink) if shrink > 1 else (frame, np.eye(3))
        qsize /= max(shrink, 1)
        image, to_image = _pad_if_outside(image, to_image, quad, qsize)

        # sample step in source pixels stays within 0.75-1.5, so bilinear taps neither skip pixels nor blur much
        double = qsize > SUPERSAMPLE_ABOVE * self.size
        work = 2 * self.size if double else self.size
        sample = (to_image @ np.vstack([crop_to_frame(quad, work), [0.0, 0.0, 1.0]]))[:2]
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if not double:
            return cv2.warpAffine(image, sample, (work, work), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        cv2.warpAffine(image, sample, (work, work), dst=self._double, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        return cv2.resize(self._double, (self.size, self.size), interpolation=cv2.INTER_AREA)


def _bounds(points: np.ndarray) -> tuple[int, int, int, int]:
    """Integer bounding box (x0, y0, x1, y1) of points, as the recipe rounds it (floor, ceil)."""
    return (int(math.floor(points[:, 0].min())), int(math.floor(points[:, 1].min())),
            int(math.ceil(points[:, 0].max())), int(math.ceil(points[:, 1].max())))


def _shrunk_roi(frame: np.ndarray, quad: Quad, shrink: int) -> tuple[np.ndarray, np.ndarray]:
    """The quad's neighbourhood area-averaged by ``shrink``, and the 3x3 map frame pixel → its pixel."""
    height, width = frame.shape[:2]
    border = max(int(round(2.0 * quad.half * 0.1)), 3) * shrink
    x0, y0, x1, y1 = _bounds(quad.corners())
    x0, y0 = max(x0 - border, 0), max(y0 - border, 0)
    cols = (min(x1 + border, width) - x0) // shrink
    rows = (min(y1 + border, height) - y0) // shrink
    if cols < 1 or rows < 1:  # quad entirely outside the frame: keep one shrunk pixel to sample from
        x0, y0 = max(min(x0, width - shrink), 0), max(min(y0, height - shrink), 0)
        cols = rows = 1
    roi = frame[y0:y0 + rows * shrink, x0:x0 + cols * shrink]
    small = cv2.resize(roi, (cols, rows), interpolation=cv2.INTER_AREA)
    # shrunk pixel j averages frame pixels x0 + j*shrink ... x0 + j*shrink + shrink - 1
    offset = (shrink - 1) * 0.5
    to_small = np.array([[1.0 / shrink, 0.0, -(x0 + offset) / shrink],
                         [0.0, 1.0 / shrink, -(y0 + offset) / shrink],
                         [0.0, 0.0, 1.0]])
    return small, to_small


def _pad_if_outside(image: np.ndarray, to_image: np.ndarray, quad: Quad,
                    qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's padding: reflect, blur towards the edges, fade to the median, where the quad leaves the image."""
    height, width = image.shape[:2]
    border = max(int(round(qsize * 0.1)), 3)
    corners = quad.corners() @ to_image[:2, :2].T + to_image[:2, 2]
    x0, y0, x1, y1 = _bounds(corners)
    # The recipe first crops to the quad's box + border; padding is measured against that crop.
    cx0, cy0 = max(x0 - border, 0), max(y0 - border, 0)
    cx1, cy1 = min(x1 + border, width), min(y1 + border, height)
    pad = [max(-(x0 - cx0) + border, 0), max(-(y0 - cy0) + border, 0),
           max((x1 - cx0) - (cx1 - cx0) + border, 0), max((y1 - cy0) - (cy1 - cy0) + border, 0)]
    if max(pad) <= border - 4 or cx1 <= cx0 or cy1 <= cy0:
        return image, to_image
    left, top, right, bottom = (int(v) for v in np.maximum(pad, max(int(round(qsize * 0.3)), 1)))
    roi = image[cy0:cy1, cx0:cx1]
    if min(roi.shape[:2]) < 2:  # reflection needs two pixels; replicate what little there is
        roi = cv2.copyMakeBorder(roi, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        cx0, cy0 = cx0 - 1, cy0 - 1
    padded = _reflect(roi, top, bottom, left, right)
    rows, cols = padded.shape[:2]
    # Only the quad's box (+1 pixel for bilinear taps) is ever sampled: blend only there.
    shift = np.array([[1.0, 0.0, left - cx0], [0.0, 1.0, top - cy0], [0.0, 0.0, 1.0]])
    bx0, by0, bx1, by1 = _bounds(corners + shift[:2, 2])
    bx0, by0, bx1, by1 = max(bx0 - 1, 0), max(by0 - 1, 0), min(bx1 + 2, cols), min(by1 + 2, rows)
    x = np.arange(bx0, bx1, dtype=np.float32)
    y = np.arange(by0, by1, dtype=np.float32)
    mask_x = 1.0 - np.minimum(x / left, (cols - 1 - x) / right)
    mask_y = 1.0 - np.minimum(y / top, (rows - 1 - y) / bottom)
    mask = np.maximum(mask_x[None, :], mask_y[:, None])
    blur_weight = np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    median_weight = np.clip(mask, 0.0, 1.0)
    region = padded[by0:by1, bx0:bx1]
    blurred = _gaussian_blur(padded, (bx0, by0, bx1, by1), qsize * 0.02)
    region[...] = cv2.blendLinear(blurred, region, blur_weight, 1.0 - blur_weight)
    median = np.median(padded[::4, ::4].reshape(-1, 3), axis=0)  # the recipe's median, from a 1/16 sample
    flat = np.empty_like(region)
    flat[...] = np.rint(median).astype(np.uint8)
    region[...] = cv2.blendLinear(flat, region, median_weight, 1.0 - median_weight)
    return padded, shift @ to_image


def _gaussian_blur(image: np.ndarray, box: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """``image[box]`` blurred with a Gaussian of ``sigma`` (the recipe's scipy filter); wide blurs run at half size."""
    x0, y0, x1, y1 = box
    rows, cols = image.shape[:2]
    margin = math.ceil(3.0 * sigma) + 2
    ex0, ey0 = max(x0 - margin, 0), max(y0 - margin, 0)
    ex1, ey1 = min(x1 + margin, cols), min(y1 + margin, rows)
    ex1, ey1 = ex1 - (ex1 - ex0) % 2, ey1 - (ey1 - ey0) % 2  # even sizes halve exactly
    window = image[ey0:ey1, ex0:ex1]
    if sigma < 2.0 or min(window.shape[:2]) < 4:
        blurred = cv2.GaussianBlur(window, (0, 0), max(sigma, 0.1), borderType=cv2.BORDER_REFLECT)
    else:  # a wide Gaussian is smooth at half resolution; 8x cheaper
        half = cv2.resize(window, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        half = cv2.GaussianBlur(half, (0, 0), sigma * 0.5, borderType=cv2.BORDER_REFLECT)
        blurred = cv2.resize(half, (window.shape[1], window.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = image[y0:y1, x0:x1].copy()
    h, w = min(y1, ey1) - y0, min(x1, ex1) - x0
    out[:h, :w] = blurred[y0 - ey0:y0 - ey0 + h, x0 - ex0:x0 - ex0 + w]
    return out


def _reflect(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """numpy's 'reflect' padding (no edge repeat) for pads of any length, like the recipe's ``np.pad``."""
    rows, cols = image.shape[:2]
    if max(top, bottom) < rows and max(left, right) < cols:
        return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    return np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="reflect")
