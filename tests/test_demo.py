"""The generated demo clip and the demo run with the tiny random model (headless)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline_data import tiny_bundle
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.demo import camera_frames, run_demo, talking_face_latents
from sganc_stream.pipeline import FaceModel, TranscodeOptions, load_face_model
from sganc_stream.video import read_frames


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(tiny_bundle())


def test_walk_is_smooth_and_deterministic(model: FaceModel) -> None:
    w = talking_face_latents(model, 40, seed=3)
    assert w.shape == (40, model.rows, 512) and w.dtype == np.float32
    assert np.array_equal(w, talking_face_latents(model, 40, seed=3))
    steps = np.abs(np.diff(w, axis=0)).mean(axis=(1, 2))
    spread = np.abs(w - w.mean(axis=0)).mean()
    assert steps.max() < 0.5 * spread  # frame to frame changes are small next to the motion range
    assert not np.array_equal(w, talking_face_latents(model, 40, seed=4))


def test_demo_writes_side_by_side_report_and_stream(model: FaceModel, tmp_path: Path) -> None:
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), progress=False, batch=3)
    report = run_demo(model, tmp_path / "demo", options, frames=3)
    side = read_frames(tmp_path / "demo" / "side_by_side.mp4")
    assert len(side) == 3 and side[0].shape == (model.size, 2 * model.size, 3)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["frames"] == report["frames"] == 3
    assert saved["bytes"] == (tmp_path / "demo" / "demo.sgnc").stat().st_size
    assert saved["quality"]["vs_aligned"]["psnr"] > 0


def test_missing_camera_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="cannot open camera 97"):
        camera_frames(97, 5)
