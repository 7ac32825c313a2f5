"""The demo on the bundled public-domain clip, with the tiny random model (headless)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline_data import tiny_bundle
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.assets import DEMO_CLIP
from sganc_stream.demo import camera_frames, run_demo
from sganc_stream.pipeline import FaceModel, TranscodeOptions, load_face_model
from sganc_stream.video import read_frames


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(tiny_bundle())


def test_bundled_clip_is_small_short_and_public_domain_sized() -> None:
    assert DEMO_CLIP.is_file() and DEMO_CLIP.stat().st_size <= 600_000
    frames = read_frames(DEMO_CLIP)
    assert 25 <= len(frames) <= 125 and frames[0].shape == (450, 450, 3)  # at most 5 s at 25 fps


def test_demo_codes_the_bundled_clip_with_paste_back_and_contact_sheet(model: FaceModel, tmp_path: Path) -> None:
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), progress=False, batch=3)
    report = run_demo(model, tmp_path / "demo", options, frames=3)
    side = read_frames(tmp_path / "demo" / "side_by_side.mp4")
    assert len(side) == 3 and side[0].shape == (450, 900, 3)  # original frame | decoded face pasted back
    crops = read_frames(tmp_path / "demo" / "aligned_vs_decoded.mp4")
    assert crops[0].shape == (model.size, 2 * model.size, 3)
    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"))
    assert sheet.shape[:2] == (3 * 256, 4 * 256)  # 3 frames, 4 square panels each
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["frames"] == report["frames"] == 3
    assert saved["bytes"] == (tmp_path / "demo" / "demo.sgnc").stat().st_size
    assert saved["quality"]["vs_aligned"]["psnr"] > 0
    # The original half of the comparison is the source frame itself (up to H.264 coding of the demo output).
    assert np.abs(side[0][:, :450].astype(int) - read_frames(DEMO_CLIP, limit=1)[0].astype(int)).mean() < 4


def test_missing_camera_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="cannot open camera 97"):
        camera_frames(97, 5)
