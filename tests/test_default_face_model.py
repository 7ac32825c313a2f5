"""The shipped default face model: loads, keeps its id, and runs E → latent codec → G on a real aligned face."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sganc_stream.assets import DEFAULT_FACE_MODEL, default_face_model
from sganc_stream.bundle import bundle_info, content_hash, load_bundle
from sganc_stream.face.tracker import VideoAligner
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.metrics import ms_ssim
from sganc_stream.models import FastEncoder, load_checkpoint
from sganc_stream.training.face_model import to_tensor, to_uint8
from tests.face_data import STEADY_CLIP, clip_frames

MAX_BYTES = 40 * 1024 * 1024
# Streams carry this id; it changes only when the shipped model is retrained (then update MODEL_CARD.md too).
MODEL_ID = "47006a7a388570051bf769fd4cc2f786dc805f226b71e95e4fe6a16b532522c7"


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
    empirical residual table for g = 10 at every preset, coarse presets for rate control, and Δ = 1 still the step
    commands code at without --step."""
    assert bundle_info(DEFAULT_FACE_MODEL)["parts"]["codec"]["stored_bytes"] <= 4_000_000
    codec = load_latent_codec(DEFAULT_FACE_MODEL)
    assert codec.steps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] and codec.steps[codec.step_index(None)] == 1.0
    assert len(codec.context_tables) == len(codec.steps) and len(codec.empirical_residuals[10]) == len(codec.steps)


def test_model_id_is_stable(model) -> None:
    bundle = load_bundle(DEFAULT_FACE_MODEL)
    assert model.model_id == bundle.model_id == content_hash(bundle.tensors, bundle.config) == MODEL_ID
    assert load_checkpoint(DEFAULT_FACE_MODEL).model_id == model.model_id


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
