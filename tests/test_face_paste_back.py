"""Paste-back: the unchanged crop reproduces the frame in the face region; nothing outside the quad changes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_data import STEADY_CLIP, clip_frames, dlib_backend
from sganc_stream.errors import InputError
from sganc_stream.face.ffhq_quad import Quad
from sganc_stream.face.ffhq_quad import apply_affine, frame_to_crop
from sganc_stream.face.paste_back import PasteBack, face_mask, feather_mask, paste_back
from sganc_stream.face.tracker import VideoAligner


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def test_unchanged_crop_reproduces_the_face_region() -> None:
    frame = clip_frames(STEADY_CLIP, 1)[0]
    face = VideoAligner(256, dlib_backend(), smoothing=False).align(frame)
    restored = paste_back(frame, face.crop, face.quad)
    region = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(face.landmarks.astype(np.int32)), 1)
    inside = region.astype(bool)
    assert psnr(restored[inside], frame[inside]) > 38.0
    assert np.abs(restored[inside].astype(int) - frame[inside]).mean() < 2.0


def test_pixels_outside_the_quad_are_untouched_and_the_centre_is_the_crop() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    quad = Quad(200.0, 150.0, 60.0, 0.4)
    out = PasteBack(64)(frame, np.full((64, 64, 3), 17, np.uint8), quad)
    outside = np.ones(frame.shape[:2], bool)
    cv2.fillConvexPoly(outside.view(np.uint8), np.rint(quad.corners()).astype(np.int32), 0)
    assert np.array_equal(out[outside], frame[outside])
    assert (out[150:171, 190:211] == 17).all()  # mask is 1 over the face region
    assert not np.shares_memory(out, frame)


def test_quad_partly_outside_the_frame_pastes_what_fits() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    out = paste_back(frame, np.full((32, 32, 3), 200, np.uint8), Quad(95.0, 50.0, 30.0, 0.0))
    assert out[50, 90].min() > 190 and out[50, 40].max() == 0


def test_feather_mask_ramps_from_edge_to_one() -> None:
    mask = feather_mask(100, 0.1)
    assert mask[50, 50] == 1.0 and mask[0, 50] < 0.05 and mask[50, 0] < 0.05
    assert np.all(np.diff(mask[50, :50]) >= 0)


def test_the_face_is_pasted_and_the_background_kept() -> None:
    """On a real aligned face the mask is 1 at every brow, eye, nose and mouth landmark and still above one half along
    the jaw; the crop's corners (backdrop, hair, shoulders) keep the frame's pixels, so no square seam can show."""
    frame = clip_frames(STEADY_CLIP, 1)[0]
    face = VideoAligner(256, dlib_backend(), smoothing=False).align(frame)
    mask = face_mask(256)
    inner = np.rint(apply_affine(frame_to_crop(face.quad, 256), face.landmarks)).astype(int)
    assert (mask[inner[17:, 1], inner[17:, 0]] == 1.0).all()
    assert np.median(mask[inner[:17, 1].clip(0, 255), inner[:17, 0].clip(0, 255)]) > 0.5
    assert mask[:40, :40].max() == 0.0 and mask[:40, -40:].max() == 0.0 and mask[-20:, :20].max() == 0.0
    out = paste_back(frame, np.full((256, 256, 3), 17, np.uint8), face.quad)
    corner = np.rint(apply_affine(np.linalg.inv(np.vstack([frame_to_crop(face.quad, 256), [0, 0, 1]]))[:2],
                                  np.array([[20.0, 20.0], [235.0, 20.0]]))).astype(int)
    for x, y in corner:
        assert np.array_equal(out[y, x], frame[y, x])
    nose = np.rint(face.landmarks[30]).astype(int)
    assert (out[nose[1], nose[0]] == 17).all()


def test_wrong_crop_size_is_an_input_error() -> None:
    with pytest.raises(InputError, match="crop"):
        PasteBack(64)(np.zeros((50, 50, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), Quad(25, 25, 10, 0))
