"""Conformance vectors (bitstream_spec/vectors): the library and the independent reference decoder agree."""

import sys
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence, stream_params
from sganc_stream.bitstream.container import decode_container

SPEC = Path(__file__).resolve().parents[1] / "bitstream_spec"
sys.path.insert(0, str(SPEC))
import reference_decoder  # noqa: E402

VECTORS = SPEC / "vectors"
CASES = sorted(p.name[: -len(".sgnc")] for p in VECTORS.glob("*.sgnc"))


@pytest.fixture(scope="module")
def model():
    return load_latent_codec(VECTORS / "model.safetensors")


def test_vectors_present():
    assert len(CASES) >= 5


@pytest.mark.parametrize("case", CASES)
def test_library_decodes_and_reencodes_vectors(model, case):
    data = (VECTORS / f"{case}.sgnc").read_bytes()
    decoded = decode_bytes(model, data)
    assert np.array_equal(decoded, np.load(VECTORS / f"{case}.decoded.npy"))
    params = stream_params(model, decode_container(data).header)
    again = encode_sequence(model, np.load(VECTORS / f"{case}.input.npy"), params, fps=25.0)
    assert again.data == data


@pytest.mark.parametrize("case", CASES)
def test_reference_decoder_agrees(case):
    ref_model = reference_decoder.Model(str(VECTORS / "model.safetensors"))
    assert ref_model.model_id == load_latent_codec(VECTORS / "model.safetensors").model_id
    states, decoded = reference_decoder.decode_file(ref_model, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))
    assert np.abs(decoded - np.load(VECTORS / f"{case}.decoded.npy")).max() < 1e-5
