"""Cropping: exact sampling geometry, the recipe's padding, and — on real clips — landmarks re-detected on the
aligned crop sitting where the FFHQ recipe puts them."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from face_data import FULL_HD_CLIP, STEADY_CLIP, clip_frames, dlib_backend
from sganc_stream.face.crop import FaceCropper
from sganc_stream.face.ffhq_quad import (Quad, apply_affine, crop_to_frame, frame_to_crop, key_points,
                                         quad_from_landmarks)
from sganc_stream.face.tracker import FaceFlags, VideoAligner

# Frontal clips of several sizes; the 1920x1080 MEAD frame must be found and aligned like the rest.
RECIPE_CLIPS = [STEADY_CLIP, FULL_HD_CLIP, "sadtalker_hdtf/WDA_KatieHill_000.mp4", "edtalk/uncrop_Obama.mp4",
                "styletalk/source_video/KristiNoem.mp4"]


def smooth_image(height: int, width: int) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """A smooth colour pattern and the function it samples, to check where crop pixels come from."""
    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([128 + 90 * np.sin(x / 37.0) * np.cos(y / 29.0), 128 + 90 * np.sin((x + y) / 53.0),
                         128 + 90 * np.cos(x / 41.0 - y / 61.0)], axis=-1)
    y, x = np.mgrid[:height, :width].astype(np.float64)
    return np.clip(np.rint(f(x, y)), 0, 255).astype(np.uint8), f


@pytest.mark.parametrize("half", [60.0, 150.0, 420.0])  # direct, 2x supersampled, shrunk first
def test_crop_pixels_sample_the_quad_where_the_map_says(half: float) -> None:
    image, f = smooth_image(1100, 1100)
    quad = Quad(550.0, 530.0, half, 0.35)
    crop = FaceCropper(128)(image, quad)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    v, u = np.mgrid[:128, :128]
    src = apply_affine(crop_to_frame(quad, 128), np.column_stack([u.ravel(), v.ravel()]))
    expected = f(src[:, 0], src[:, 1]).reshape(128, 128, 3)
    # area filtering blurs a little when the quad is large; the geometry error would show as a large bias
    assert np.abs(crop - expected).mean() < (1.5 if half < 100 else 4.0)


def test_quad_leaving_the_frame_is_reflect_padded_blurred_and_faded() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    quad = Quad(280.0, 150.0, 100.0, 0.0)  # right half of the quad lies outside the frame
    crop = FaceCropper(200)(image, quad)
    inside, outside = crop[60:140, 10:60], crop[60:140, 150:200]
    assert inside.std() > 25  # noise, only softened by bilinear resampling
    assert outside.std() < 0.25 * inside.std()  # blurred towards the recipe's median colour
    assert abs(float(outside.mean()) - float(np.median(image))) < 20
    # deep inside the frame the padding changes nothing: same pixels as a frame that needs no padding
    wide = np.zeros((300, 600, 3), np.uint8)
    wide[:, :300] = image
    reference = FaceCropper(200)(wide, quad)
    np.testing.assert_allclose(crop[60:140, 10:40].astype(int), reference[60:140, 10:40].astype(int), atol=1)


@pytest.mark.parametrize("clip", RECIPE_CLIPS)
def test_redetected_landmarks_sit_where_the_recipe_puts_them(clip: str) -> None:
    size = 256
    frame = clip_frames(clip, 1)[0]
    face = VideoAligner(size, dlib_backend(), smoothing=False).align(frame)
    assert face.flags == FaceFlags.DETECTED
    boxes = dlib_backend().detect(face.crop)
    assert boxes, "no face re-detected on the aligned crop"
    again = dlib_backend().landmarks(face.crop, boxes[0])
    found = key_points(again)
    # where the recipe puts the source frame's key points in the crop
    planned = key_points(apply_affine(frame_to_crop(face.quad, size), face.landmarks))
    assert np.hypot(*(found.eye_mid - planned.eye_mid)) < 0.01 * size
    assert np.hypot(*(found.mouth - planned.mouth)) < 0.015 * size
    # and the recipe run on the crop's own landmarks returns the whole crop, upright (centre, scale, rotation)
    quad = quad_from_landmarks(again)
    assert math.hypot(quad.cx - (size - 1) / 2, quad.cy - (size - 1) / 2) < 0.01 * size
    assert quad.half == pytest.approx(size / 2, rel=0.03)
    assert abs(math.degrees(quad.angle)) < 1.5
    eye_line = found.eye_right - found.eye_left
    assert abs(math.degrees(math.atan2(eye_line[1], eye_line[0]))) < 4.0  # level up to the recipe's mouth term
