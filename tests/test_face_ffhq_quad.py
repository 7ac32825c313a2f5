"""The FFHQ recipe's geometry, against a line-by-line transcription of NVlabs' recreate_aligned_images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sganc_stream.face.ffhq_quad import (Quad, apply_affine, canonical_quad, crop_to_frame, frame_to_crop,
                                         key_points, quad_from_landmarks)


def recipe_quad(lm: np.ndarray) -> np.ndarray:
    """ffhq-dataset download_ffhq.py, recreate_aligned_images, transcribed (quad corners, same order)."""
    lm_eye_left, lm_eye_right, lm_mouth_outer = lm[36:42], lm[42:48], lm[48:60]
    eye_left, eye_right = np.mean(lm_eye_left, axis=0), np.mean(lm_eye_right, axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm_mouth_outer[0] + lm_mouth_outer[6]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def random_face(rng: np.random.Generator) -> np.ndarray:
    """68 points with plausible eyes and mouth under a random similarity (the rest is noise: the recipe ignores it)."""
    lm = rng.uniform(-1, 1, (68, 2))
    lm[36:42] = [-0.35, -0.2] + rng.normal(0, 0.05, (6, 2))
    lm[42:48] = [0.35, -0.2] + rng.normal(0, 0.05, (6, 2))
    lm[48], lm[54] = [-0.25, 0.5], [0.25, 0.5]
    lm[48:60] += rng.normal(0, 0.03, (12, 2))
    angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(20, 400)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return lm @ rot.T * scale + rng.uniform(0, 1000, 2)


@pytest.mark.parametrize("seed", range(20))
def test_quad_matches_recipe(seed: int) -> None:
    lm = random_face(np.random.default_rng(seed))
    np.testing.assert_allclose(quad_from_landmarks(lm).corners(), recipe_quad(lm), rtol=0, atol=1e-6)


def test_mouth_distance_sets_size_when_it_dominates() -> None:
    lm = random_face(np.random.default_rng(0))
    kp = key_points(lm)
    lm = lm.copy()
    lm[48:60] += (kp.mouth - kp.eye_mid) * 1.5  # a long face: 1.8 x eye-to-mouth exceeds 2 x eye distance
    kp = key_points(lm)
    assert quad_from_landmarks(lm).half == pytest.approx(1.8 * np.hypot(*(kp.mouth - kp.eye_mid)))
    np.testing.assert_allclose(quad_from_landmarks(lm).corners(), recipe_quad(lm), atol=1e-6)


def test_corners_round_trip() -> None:
    quad = Quad(120.5, -40.25, 77.0, 2.9)
    back = Quad.from_corners(quad.corners())
    np.testing.assert_allclose([back.cx, back.cy, back.half, back.angle], [120.5, -40.25, 77.0, 2.9])


def test_crop_maps_follow_pil_quad_convention() -> None:
    quad = Quad(300.0, 200.0, 100.0, 0.3)
    size = 64
    to_frame = crop_to_frame(quad, size)
    corners = quad.corners()
    # pixel (0, 0)'s centre lies half a crop pixel inside the top-left corner; the crop centre is the quad centre
    step = (corners[3] - corners[0]) / size + (corners[1] - corners[0]) / size
    np.testing.assert_allclose(apply_affine(to_frame, [[0, 0]])[0], corners[0] + step / 2)
    np.testing.assert_allclose(apply_affine(to_frame, [[(size - 1) / 2] * 2])[0], [300.0, 200.0])
    points = np.random.default_rng(1).uniform(0, 500, (10, 2))
    np.testing.assert_allclose(apply_affine(crop_to_frame(quad, size), apply_affine(frame_to_crop(quad, size), points)),
                               points, atol=1e-9)


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_recipe_is_idempotent_in_its_own_crop(size: int) -> None:
    """Landmarks carried into the crop give the whole crop, upright: the fixed point the re-detection test checks."""
    lm = random_face(np.random.default_rng(size))
    quad = quad_from_landmarks(lm)
    again = quad_from_landmarks(apply_affine(frame_to_crop(quad, size), lm))
    target = canonical_quad(size)
    np.testing.assert_allclose([again.cx, again.cy, again.half], [target.cx, target.cy, target.half], atol=1e-6)
    assert again.angle == pytest.approx(0.0, abs=1e-9)
