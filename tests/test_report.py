"""Report accumulation and layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.errors import InputError
from sganc_stream.metrics import ms_ssim, psnr
from sganc_stream.report import QualityMeter, stream_report, write_json


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_meter_accumulates_the_metrics_module_values_over_batches() -> None:
    ref, test = _frames(5, 0), _frames(5, 1)
    meter = QualityMeter(identity_every=2)
    got = np.concatenate([meter.add(ref[:3], test[:3]), meter.add(ref[3:], test[3:])])
    assert np.allclose(got, psnr(ref, test))
    s = meter.summary()
    assert s["frames"] == 5 and s["size"] == [64, 64] and s["ms_ssim_win_size"] == 3
    assert s["psnr"] == pytest.approx(float(np.mean(psnr(ref, test))))
    assert s["ms_ssim"] == pytest.approx(float(np.mean(ms_ssim(ref, test))))
    assert len(meter.values["identity_distance"]) == 3  # frames 0, 2, 4
    assert s["lpips"] is None or s["lpips_available"]  # unavailable is None, never 0


def test_meter_reports_skin_colour_and_shading_of_the_test_against_the_reference() -> None:
    """The skin block: the same frames give ΔE 0 and contrast ratio 1; a darker, flattened copy gives ΔL* < 0 and a
    contrast ratio below 1 (what a decoder that loses a face's shading does)."""
    rng = np.random.default_rng(0)
    face = np.clip(rng.normal(120, 30, (4, 64, 64, 3)), 0, 255).astype(np.uint8)
    same = QualityMeter(identity_every=1000)
    same.add(face, face)
    skin = same.summary()["skin"]
    assert skin["delta_e76"] == 0 and skin["delta_l"] == 0 and skin["contrast_ratio"] == 1
    flat = (face.astype(np.float64) - 120) * 0.5 + 100  # half the shading, 20 levels darker
    meter = QualityMeter(identity_every=1000)
    meter.add(face, flat.clip(0, 255).astype(np.uint8))
    skin = meter.summary()["skin"]
    assert skin["delta_l"] < -5 and skin["delta_e76"] >= -skin["delta_l"]
    parts = skin["delta_l"] ** 2 + skin["delta_chroma"] ** 2 + skin["delta_hue"] ** 2
    assert skin["delta_hue"] >= 0 and parts == pytest.approx(skin["delta_e76"] ** 2, rel=0.01, abs=0.05)
    assert skin["contrast_ratio"] == pytest.approx(0.5, abs=0.03)
    assert QualityMeter().summary()["skin"] is None


def test_meter_rejects_bad_identity_period() -> None:
    with pytest.raises(InputError):
        QualityMeter(0)


def test_stream_report_rate_figures(tmp_path: Path) -> None:
    header = StreamHeader("ab" * 32, 10, 512, "open", 10, 1.0, 25.0, 3, 0)
    frames = [{"index": i, "type": "inter", "bytes": b} for i, b in enumerate([100, 20, 30])]
    r = stream_report(header, 200, frames, timing={"encode": 1.0, "decode": 0.5}, decoded=True, quality=None)
    assert r["frames"] == 3 and r["bytes"] == 200
    assert r["no_face_frames"] == 0 and r["first_face_frame"] == 0 and r["identity_changes"] == 0
    assert r["kbps"] == pytest.approx(8 * 200 / 3 * 25 / 1000)
    assert r["bits_per_frame"]["mean"] == pytest.approx(8 * 50)
    assert r["speed"] == {"encode_fps": 3.0, "decode_fps": 6.0}
    assert (r["stream"]["version"], r["stream"]["residual"], r["stream"]["steps"]) == (2, "irwin_hall", [])
    rated = StreamHeader("ab" * 32, 10, 512, "open", 10, 1.0, 25.0, 3, 0, residual="empirical", steps=(1.0, 2.0),
                         version=4)
    s = stream_report(rated, 200, frames, timing={"encode": 1.0, "decode": 0.5}, decoded=True, quality=None)["stream"]
    assert (s["version"], s["residual"], s["steps"]) == (4, "empirical", [1.0, 2.0])  # what the report was coded with
    r["quality"] = {"psnr": float("inf")}
    write_json(tmp_path / "r.json", r)
    assert json.loads((tmp_path / "r.json").read_text())["quality"]["psnr"] is None  # strict JSON


def test_stream_report_counts_frames_without_a_face_and_changes_of_person() -> None:
    header = StreamHeader("ab" * 32, 10, 512, "open", 10, 1.0, 25.0, 6, 0)
    types = ["no_face", "no_face", "intra", "inter", "no_face", "new_face"]
    frames = [{"index": i, "type": t, "bytes": 7 if t == "no_face" else 90} for i, t in enumerate(types)]
    r = stream_report(header, 330, frames, timing={"encode": 1.0, "decode": 0.5}, decoded=False, quality=None)
    assert (r["no_face_frames"], r["first_face_frame"], r["identity_changes"]) == (3, 2, 1)
    assert r["kbps"] == pytest.approx(8 * 330 / 6 * 25 / 1000)  # the rate counts every frame of the clip
