"""Quality mode: refining W+ lowers the loss it descends, the temporal term holds latents together, bad options fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face_data import STEADY_CLIP, clip_frames
from sganc_stream.assets import default_face_model
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import FaceModel, FrameEncoder, load_face_model
from sganc_stream.refine import LatentRefiner, RefineOptions

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(default_face_model())


@pytest.fixture(scope="module")
def crops(model: FaceModel) -> np.ndarray:
    encoder = FrameEncoder(model, StreamParams())
    return np.stack([encoder.encode(f).crop for f in clip_frames(STEADY_CLIP, 2)])


def test_refinement_lowers_reconstruction_and_identity_loss(model: FaceModel, crops: np.ndarray) -> None:
    init = model.project(crops[:1])
    probe = LatentRefiner(model, RefineOptions(1, lr=1e-9))  # one step that moves nothing: the loss at E's W+
    probe.refine(crops[:1], init, None)
    refiner = LatentRefiner(model, RefineOptions(15))
    refined = refiner.refine(crops[:1], init, None)
    assert refined.shape == init.shape and refined.dtype == np.float32
    assert not np.allclose(refined, init)
    check = LatentRefiner(model, RefineOptions(1, lr=1e-9))
    check.refine(crops[:1], refined, None)
    before, after = probe.last_loss, check.last_loss
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert after["identity"] < before["identity"]


def test_temporal_term_keeps_the_latent_near_the_previous_frame(model: FaceModel, crops: np.ndarray) -> None:
    init = model.project(crops[1:])
    previous = model.project(crops[:1])[0]
    free = LatentRefiner(model, RefineOptions(10, identity_weight=0, temporal_weight=0)).refine(crops[1:], init,
                                                                                                 previous)
    held = LatentRefiner(model, RefineOptions(10, identity_weight=0, temporal_weight=1e4)).refine(crops[1:], init,
                                                                                                   previous)
    assert np.abs(held[0] - previous).mean() < 0.5 * np.abs(free[0] - previous).mean()


def test_the_encoder_codes_the_refined_latent(model: FaceModel) -> None:
    frames = clip_frames(STEADY_CLIP, 2)
    plain = FrameEncoder(model, StreamParams()).encode_batch(list(frames))
    refined = FrameEncoder(model, StreamParams(), refine=RefineOptions(3, identity_weight=0)).encode_batch(list(frames))
    for a, b in zip(plain, refined):
        assert np.array_equal(a.crop, b.crop)
        assert not np.allclose(a.wplus, b.wplus)
        # what is coded is the refined W+: its reconstruction lies nearer to it than to E's
        assert np.square(b.recon_wplus - b.wplus).mean() < np.square(b.recon_wplus - a.wplus).mean()


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"steps": 5, "lr": 0.0}, {"steps": 5, "temporal_weight": -1.0}])
def test_bad_options_are_one_line_errors(kwargs: dict) -> None:
    with pytest.raises(InputError):
        RefineOptions(**kwargs)


def test_cli_refuses_negative_steps_before_loading_anything(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sganc_stream", "transcode", "--refine", "-2", "missing.mp4",
                          str(tmp_path / "o.sgnc")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["sganc-stream transcode: error: --refine must be 0 or more steps, got -2"]
    assert not (tmp_path / "o.sgnc").exists()
