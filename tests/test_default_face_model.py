"""The shipped default face model: loads, keeps its id, and runs E → latent codec → G on a real aligned face."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.assets import DEFAULT_FACE_MODEL, DEMO_CLIP, default_face_model
from sganc_stream.bundle import bundle_info, content_hash, load_bundle
from sganc_stream.cli import main
from sganc_stream.face.tracker import VideoAligner
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.metrics import ms_ssim
from sganc_stream.models import FastEncoder, load_checkpoint
from sganc_stream.training.face_model import to_tensor, to_uint8
from sganc_stream.video import read_frames
from tests.face_data import STEADY_CLIP, clip_frames

MAX_BYTES = 40 * 1024 * 1024
# Streams carry this id; it changes only when the shipped model is retrained (then update MODEL_CARD.md too).
MODEL_ID = "cd3d0bb0609f36b518e61a98bff83cc9621d775fea102f5f914f67b1a1805839"


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(default_face_model())


def test_bundle_is_small_and_complete(model) -> None:
    assert DEFAULT_FACE_MODEL.stat().st_size <= MAX_BYTES
    assert isinstance(model.encoder, FastEncoder)
    assert model.generator.size == model.encoder.input_size >= 64
    assert model.generator.n_latent == model.encoder.n_latent == model.config["codec"]["rows"]
    assert "research" in model.config["licence"]
    codec = load_latent_codec(DEFAULT_FACE_MODEL)
    assert (codec.rows, codec.width) == (model.generator.n_latent, model.generator.config.style_dim)


def test_codec_part_is_compact_and_carries_the_fitted_tables() -> None:
    """Issue 16: the codec part of the shipped bundle is at most 4 MB as stored, with temporal-context tables and an
    empirical residual table for g = 10 at every preset and coarse presets for rate control; issue 12: commands
    without --step code at the middle preset, Δ = 4."""
    assert bundle_info(DEFAULT_FACE_MODEL)["parts"]["codec"]["stored_bytes"] <= 4_000_000
    codec = load_latent_codec(DEFAULT_FACE_MODEL)
    assert codec.steps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] and codec.steps[codec.step_index(None)] == 4.0
    assert len(codec.context_tables) == len(codec.steps) and len(codec.empirical_residuals[10]) == len(codec.steps)


def test_model_id_is_stable(model) -> None:
    bundle = load_bundle(DEFAULT_FACE_MODEL)
    assert model.model_id == bundle.model_id == content_hash(bundle.tensors, bundle.config) == MODEL_ID
    assert load_checkpoint(DEFAULT_FACE_MODEL).model_id == model.model_id


def test_inspect_without_a_file_shows_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    """`sganc-stream inspect` with no FILE describes the embedded model, by the id streams carry (the id hashes the
    tensors and config, not the file's bytes)."""
    assert main(["inspect", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_id"] == MODEL_ID and info["file"] == str(DEFAULT_FACE_MODEL)


def test_encoder_codec_generator_on_a_real_aligned_face(model) -> None:
    aligner = VideoAligner(model.generator.size, "dlib")
    crops = np.stack([aligner.align(f).crop for f in clip_frames(STEADY_CLIP, 6)])
    codec = load_latent_codec(DEFAULT_FACE_MODEL)
    with torch.no_grad():
        wplus = model.encoder(to_tensor(crops)).numpy()
        projected = to_uint8(model.generator(torch.from_numpy(wplus)))
        coded = encode_sequence(codec, wplus, StreamParams(mode="open", g=10, step_index=1))
        decoded = to_uint8(model.generator(torch.from_numpy(decode_bytes(codec, coded.data))))
    assert np.isfinite(wplus).all() and decoded.shape == crops.shape
    assert np.median(ms_ssim(crops, projected)) > 0.6  # a trained model reconstructs the face
    assert np.median(ms_ssim(crops, decoded)) > 0.5
    assert len(coded.data) < crops.size  # far fewer bytes than the pixels


def test_demo_on_the_bundled_clip_keeps_the_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `sganc-stream demo` with no argument codes the bundled clip headless with the shipped model, and the
    decoded face is the same person by dlib's 0.6 line (mean identity distance over the sampled frames) at the
    default step, at a talking-head rate (the issue's ≤ 30 kbit/s aim at the middle preset, with 10 % slack for
    the last bits of a float)."""
    out = tmp_path / "demo"
    assert main(["demo", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == len(read_frames(DEMO_CLIP)) and report["stream"]["model_id"] == MODEL_ID
    assert report["quality"]["vs_aligned"]["identity_distance"] < 0.6
    assert report["quality"]["vs_aligned"]["ms_ssim"] > 0.65
    assert report["kbps"] * 25 / report["fps"] <= 33
    # the encoder the bundle's tables were fitted for is the default (auto), and the report and summary line say so
    stream = report["stream"]
    assert (stream["context"], stream["drift_damping"], stream["rounding_offset"]) == ("temporal", 0.5, 1 / 6)
    assert "(temporal context, drift damping 0.5, rounding offset 0.167)" in capsys.readouterr().out
