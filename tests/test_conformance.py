"""Conformance vectors (bitstream_spec/vectors): the library and the independent reference decoder agree.

What must hold on every machine (SPEC §7): the integer decoder states exactly, and T⁻¹'s float32 output within
|a − b| ≤ DECODED_ATOL + DECODED_RTOL·|b|. The vectors were made on another machine: nothing else is compared
with them. Encoder bytes (E and T run in float before the quantizer) are only compared on this machine, at one
thread count. CI runs this module a second time as an older CPU would (MKL_ENABLE_INSTRUCTIONS=SSE4_2,
ATEN_CPU_CAPABILITY=default).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.bitstream.container import decode_container
from sganc_stream.latent.codec import LatentStreamDecoder
from sganc_stream.latent.model import DECODED_ATOL, DECODED_RTOL, load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, stream_params
from sganc_stream.models.recipe import tolerance_excess

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


def _states_and_floats(model, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(integer states (frames, C) int64, decoded W+ (frames, rows, width) float32), frame by frame."""
    container = decode_container(data)
    dec = LatentStreamDecoder(model, stream_params(model, container.header))
    states, decoded = [], []
    for p in container.packets:
        decoded.append(dec.decode(p.type, p.payload))
        states.append(dec.state)
    return np.array(states, np.int64), np.array(decoded, np.float32)


@pytest.mark.parametrize("case", CASES)
def test_library_decodes_vectors(model, case):
    states, decoded = _states_and_floats(model, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))  # integers: exact everywhere
    assert tolerance_excess(decoded, np.load(VECTORS / f"{case}.decoded.npy"), DECODED_RTOL, DECODED_ATOL) <= 0


@pytest.mark.parametrize("case", CASES)
def test_reference_decoder_agrees(case):
    ref_model = reference_decoder.Model(str(VECTORS / "model.safetensors"))
    assert ref_model.model_id == load_latent_codec(VECTORS / "model.safetensors").model_id
    states, decoded = reference_decoder.decode_file(ref_model, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))
    ref = np.load(VECTORS / f"{case}.decoded.npy")
    assert tolerance_excess(decoded, ref, DECODED_RTOL, DECODED_ATOL) <= 0


ENCODE_ALL = """
import hashlib, sys
import numpy as np, torch
from pathlib import Path
from sganc_stream.bitstream.container import decode_container
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, stream_params
torch.set_num_threads(1)
v = Path(sys.argv[1])
m = load_latent_codec(v / "model.safetensors")
for case in sys.argv[2:]:
    params = stream_params(m, decode_container((v / f"{case}.sgnc").read_bytes()).header)
    data = encode_sequence(m, np.load(v / f"{case}.input.npy"), params, fps=25.0).data
    print(case, hashlib.sha256(data).hexdigest())
"""


def test_encoder_is_deterministic_on_one_machine(model):
    """The bytes of an encoder run are exact for one machine and thread count: again in this process, and in
    another process, they are the same, and they decode to exactly what the encoder reconstructed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digests = {}
        for case in CASES:
            params = stream_params(model, decode_container((VECTORS / f"{case}.sgnc").read_bytes()).header)
            latents = np.load(VECTORS / f"{case}.input.npy")
            first, second = (encode_sequence(model, latents, params, fps=25.0) for _ in range(2))
            assert first.data == second.data
            _, decoded = _states_and_floats(model, first.data)
            assert np.array_equal(decoded, first.recon)  # the decoder gives what the encoder reconstructed
            digests[case] = hashlib.sha256(first.data).hexdigest()
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", ENCODE_ALL, str(VECTORS), *CASES], capture_output=True, text=True,
                         timeout=300, env=env, check=True, cwd=SPEC.parent).stdout
    assert dict(line.split() for line in out.splitlines()) == digests
