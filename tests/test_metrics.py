"""Quality metrics: known PSNR values, MS-SSIM behaviour at codec crop sizes, dlib identity on real faces."""

from __future__ import annotations

import importlib.machinery
import math
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sganc_stream import metrics
from sganc_stream.errors import InputError
from sganc_stream.metrics import (
    FaceDescriptor,
    compare_frames,
    default_face_descriptor,
    detail_ratio,
    face_lab,
    face_luma,
    identity_distance,
    lpips,
    ms_ssim,
    ms_ssim_window,
    psnr,
)
from sganc_stream.video import read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "data" / "clips"
# Two clips per identity, recorded on different occasions (styletalk source videos).
SAME_PERSON = {
    "obama": ("styletalk/source_video/Obama_clip1.mp4", "styletalk/source_video/Obama_clip2.mp4"),
    "andrew": ("styletalk/source_video/andrew_clip_1.mp4", "styletalk/source_video/andrew_clip_2.mp4"),
}


def clip_frames(name: str, limit: int) -> list[np.ndarray]:
    if not (CLIPS / name).is_file():
        pytest.skip(f"shared clip not found: {CLIPS / name}")
    return read_frames(CLIPS / name, limit=limit)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real 256x256 talking-head frame."""
    return clip_frames("dreamtalk_mead/M030_front_neutral_level1_001.mp4", 1)[0]


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def test_psnr_known_values() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + np.uint8(5)) == pytest.approx(10 * math.log10(255**2 / 25))  # 34.15 dB exactly
    noisy = np.clip(a + rng.normal(0, 10, a.shape).round(), 0, 255).astype(np.uint8)  # no clipping: 40..200 +- 50
    assert psnr(a, noisy) == pytest.approx(10 * math.log10(255**2 / 100), abs=0.15)  # sigma 10 -> 28.13 dB


def test_psnr_of_a_batch_is_per_frame() -> None:
    a = np.zeros((3, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1] += 5
    b[2] += 50
    values = psnr(a, b)
    assert values.shape == (3,) and values[0] == math.inf and values[1] > values[2]


def test_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(InputError, match="uint8 RGB"):
        ms_ssim(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))


def test_ms_ssim_window_fits_the_crop_size() -> None:
    assert [ms_ssim_window(s, s) for s in (1024, 256, 161, 160, 128, 64, 33)] == [11, 11, 11, 9, 7, 3, 3]
    with pytest.raises(InputError, match="too small"):
        ms_ssim_window(32, 256)


@pytest.mark.parametrize("side", [256, 128, 64])
def test_ms_ssim_is_one_for_identical_frames_and_falls_with_blur(face: np.ndarray, side: int) -> None:
    image = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    scores = [ms_ssim(image, image)] + [ms_ssim(image, blur(image, s)) for s in (0.7, 1.5, 3.0)]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.95


def test_detail_ratio_is_one_for_the_reference_below_one_when_smoothed_above_with_noise(face: np.ndarray) -> None:
    image = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    ratios = [detail_ratio(image, image)] + [detail_ratio(image, blur(image, s)) for s in (0.7, 1.5)]
    assert ratios[0] == pytest.approx(1.0) and ratios[0] > ratios[1] > ratios[2] and ratios[2] < 0.2
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    assert detail_ratio(image, noisy) > 1.5
    batch = detail_ratio(np.stack([image, image]), np.stack([image, blur(image, 1.5)]))
    assert batch == pytest.approx([1.0, ratios[2]])
    with pytest.raises(InputError, match="shape"):
        detail_ratio(image, image[:64])


def test_face_luma_reads_the_central_skin_box_in_bt601_luma(face: np.ndarray) -> None:
    flat = np.zeros((100, 100, 3), np.uint8)
    flat[45:75, 30:70] = (200, 100, 50)  # the box: Y' = 0.299·200 + 0.587·100 + 0.114·50
    assert face_luma(flat) == pytest.approx(124.2)
    flat[:45] = flat[75:] = 255  # outside the box: no effect
    assert face_luma(flat) == pytest.approx(124.2)
    darker = (face.astype(np.int16) - 40).clip(0, 255).astype(np.uint8)
    got = face_luma(np.stack([face, darker]))
    assert got.shape == (2,) and 30 < got[0] - got[1] <= 40
    with pytest.raises(InputError):
        face_luma(face.astype(np.float32))


def test_ms_ssim_batch_matches_single_frames(face: np.ndarray) -> None:
    batch_a = np.stack([face, face[::-1]])
    batch_b = np.stack([blur(face, 1.0), blur(face[::-1], 2.0)])
    values = ms_ssim(batch_a, batch_b)
    assert values == pytest.approx([ms_ssim(face, batch_b[0]), ms_ssim(face[::-1], batch_b[1])], abs=1e-6)


def test_identity_distance_of_the_same_image_is_zero(face: np.ndarray) -> None:
    assert identity_distance(face, face) == pytest.approx(0.0, abs=1e-6)
    assert 0 < identity_distance(face, blur(face, 2.0)) < 0.4


def test_identity_distance_separates_people() -> None:
    """Different recordings of one person are closer than any two people; dlib's threshold is 0.6."""
    frames = {(who, k): clip_frames(name, 1)[0] for who, names in SAME_PERSON.items() for k, name in enumerate(names)}
    same = [identity_distance(frames[who, 0], frames[who, 1]) for who in SAME_PERSON]
    different = [identity_distance(frames["obama", i], frames["andrew", j]) for i in (0, 1) for j in (0, 1)]
    assert max(same) < 0.5 < 0.6 < min(different), (same, different)


def test_no_face_gives_nan_without_fallback_and_a_box_with_it() -> None:
    gray = np.full((128, 128, 3), 128, np.uint8)
    strict = FaceDescriptor(fallback=False)
    assert strict(gray) is None and strict.counts == {"detector": 0, "fallback": 0, "missing": 1}
    assert math.isnan(identity_distance(gray, gray, descriptor=strict))
    lenient = FaceDescriptor()
    assert lenient(gray).shape == (128,) and lenient.counts["fallback"] == 1


def test_lpips_is_none_when_its_weights_are_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metrics._lpips_model.cache_clear()
    try:
        image = np.zeros((64, 64, 3), np.uint8)
        assert lpips(image, image) is None
    finally:
        metrics._lpips_model.cache_clear()


def test_lpips_runs_when_package_and_weights_are_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in lpips package (mean absolute difference) checks the plumbing: [-1, 1] inputs, one value a frame."""

    class MeanAbsoluteDifference(torch.nn.Module):
        def __init__(self, **kwargs: object) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x - y).abs().mean((1, 2, 3), keepdim=True)  # lpips.LPIPS returns (N, 1, 1, 1)

    fake = types.ModuleType("lpips")
    fake.__spec__ = importlib.machinery.ModuleSpec("lpips", None)
    fake.LPIPS = MeanAbsoluteDifference
    monkeypatch.setitem(sys.modules, "lpips", fake)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / metrics.LPIPS_BACKBONE).write_bytes(b"")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metrics._lpips_model.cache_clear()
    try:
        a = np.zeros((20, 40, 40, 3), np.uint8)
        b = np.full((20, 40, 40, 3), 51, np.uint8)
        assert lpips(a, b) == pytest.approx(np.full(20, 0.4)) and lpips(a[0], b[0]) == pytest.approx(0.4)
    finally:
        metrics._lpips_model.cache_clear()


def test_compare_frames_summarises_a_degraded_clip() -> None:
    ref = clip_frames("styletalk/source_video/Obama_clip1.mp4", 20)
    test = [blur(f, 1.5) for f in ref]
    report = compare_frames(ref, iter(test), identity_every=5, descriptor=default_face_descriptor())
    assert report["frames"] == 20 and report["size"] == [256, 256]
    assert report["psnr_db"]["mean"] == pytest.approx(float(np.mean(psnr(np.stack(ref), np.stack(test)))))
    assert 25 < report["psnr_db"]["median"] < 45
    assert 0.8 < report["ms_ssim"]["mean"] < 1.0 and report["ms_ssim"]["win_size"] == 11
    identity = report["identity_distance"]
    assert (identity["frames"], identity["missing"], identity["detected_boxes"]) == (4, 0, 8)
    assert 0 < identity["mean"] < 0.4
    assert report["lpips"] is None or report["lpips"]["mean"] > 0


def test_compare_identical_frames_and_length_mismatch(face: np.ndarray) -> None:
    report = compare_frames([face, face], [face, face])
    assert report["psnr_db"]["mean"] == math.inf and report["ms_ssim"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert report["identity_distance"]["mean"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="differ in length"):
        compare_frames([face] * 3, [face] * 2)
    with pytest.raises(InputError, match="differ in size"):
        compare_frames([face, face[:200]], [face, face[:200]])
    small = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="differ in length"):  # test runs on past a full chunk of reference
        compare_frames([small] * 16, [small] * 17, identity_every=100)


def test_face_lab_measures_skin_chroma_that_luma_misses(face: np.ndarray) -> None:
    flat = np.zeros((100, 100, 3), np.uint8)
    flat[45:75, 30:70] = (255, 255, 255)  # white box: L* 100, no chroma (sRGB white is D65)
    assert face_lab(flat) == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    flat[45:75, 30:70] = (160, 110, 80)  # a brown skin tone: CIELAB (50.9, 16.3, 24.7) by the CIE 15:2004 formulas
    assert face_lab(flat) == pytest.approx([50.9, 16.3, 24.7], abs=0.3)  # OpenCV: 8-bit-free float path
    grey = face.mean(axis=2, keepdims=True).repeat(3, axis=2).astype(np.uint8)  # same lightness, no colour
    lab = face_lab(np.stack([face, grey]))
    assert lab.shape == (2, 3) and abs(lab[0, 0] - lab[1, 0]) < 4
    assert np.hypot(*lab[0, 1:]) > 5 > np.hypot(*lab[1, 1:])
    with pytest.raises(InputError):
        face_lab(face.astype(np.float32))
