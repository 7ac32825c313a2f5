"""Conformance vectors (bitstream_spec/vectors): the library and the independent reference decoder agree."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.bitstream.container import VERSION, decode_container, encode_container
from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.errors import BitstreamError
from sganc_stream.latent.codec import LatentStreamDecoder
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence, stream_params

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


def test_vectors_of_both_versions_present():
    versions = [(VECTORS / f"{case}.sgnc").read_bytes()[4] for case in CASES]
    assert versions.count(1) >= 5 and versions.count(2) >= 7
    kinds = {p.type for case in CASES for p in decode_container((VECTORS / f"{case}.sgnc").read_bytes()).packets}
    assert {PacketType.NO_FACE, PacketType.NEW_FACE} <= kinds


@pytest.mark.parametrize("case", CASES)
def test_library_decodes_and_reencodes_vectors(model, case):
    data = (VECTORS / f"{case}.sgnc").read_bytes()
    decoded = decode_bytes(model, data)
    assert np.array_equal(decoded, np.load(VECTORS / f"{case}.decoded.npy"), equal_nan=True)
    container = decode_container(data)
    if container.header.version != VERSION:
        return  # older versions are read, never written
    params = stream_params(model, container.header)
    new_faces = [p.frame for p in container.packets if p.type == PacketType.NEW_FACE]
    again = encode_sequence(model, np.load(VECTORS / f"{case}.input.npy"), params, fps=25.0, new_faces=new_faces)
    assert again.data == data


@pytest.mark.parametrize("case", CASES)
def test_library_states_equal_vector_states(model, case):
    """Integer states are exact on any machine; the W+ after T⁻¹ is float (within 1e-5 of the vectors')."""
    container = decode_container((VECTORS / f"{case}.sgnc").read_bytes())
    dec = LatentStreamDecoder(model, stream_params(model, container.header), container.header.version)
    states, decoded = [], []
    for p in container.packets:
        decoded.append(dec.decode(p.type, p.payload) if p.type.is_frame else np.full((model.rows, model.width), np.nan))
        if p.type.is_frame:
            states.append(dec.state)
    assert np.array_equal(np.array(states).reshape(-1, model.channels), np.load(VECTORS / f"{case}.states.npy"))
    expected = np.load(VECTORS / f"{case}.decoded.npy")
    assert np.array_equal(np.isnan(decoded), np.isnan(expected))
    assert np.nanmax(np.abs(np.array(decoded) - expected)) < 1e-5


@pytest.mark.parametrize("case", CASES)
def test_reference_decoder_agrees(case):
    ref_model = reference_decoder.Model(str(VECTORS / "model.safetensors"))
    assert ref_model.model_id == load_latent_codec(VECTORS / "model.safetensors").model_id
    states, decoded = reference_decoder.decode_file(ref_model, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))
    expected = np.load(VECTORS / f"{case}.decoded.npy")
    assert np.array_equal(np.isnan(decoded), np.isnan(expected))
    assert np.nanmax(np.abs(decoded - expected)) < 1e-5



def _face_packets(model, data: bytes) -> list[tuple[LatentStreamDecoder, Packet]]:
    """(a decoder in the state before the packet, the packet) for every face packet of a stream."""
    container = decode_container(data)
    dec = LatentStreamDecoder(model, stream_params(model, container.header), container.header.version)
    out = []
    for p in container.packets:
        if p.type.is_frame:
            out.append((copy.copy(dec), p))  # decode replaces the state, never mutates it: a shallow copy is a snapshot
            dec.decode(p.type, p.payload)
    return out


def _flipped(payload: bytes, bit: int) -> bytes:
    b = bytearray(payload)
    b[bit // 8] ^= 1 << bit % 8
    return bytes(b)


def _decodes(dec: LatentStreamDecoder, ptype: PacketType, payload: bytes) -> bool:
    try:
        copy.copy(dec).decode(ptype, payload)
        return True
    except BitstreamError:
        return False


def test_every_bit_flip_of_a_v2_payload_is_an_error(model):
    """Altered payloads (the container CRC recomputed, so only the payload can tell): version 1 decodes some of them
    to other values without an error; version 2's check value makes every one an error, in both decoders."""
    name = "open_g3_keyint8_escapes"
    v1 = _face_packets(model, (VECTORS / f"{name}.sgnc").read_bytes())[:4]
    assert sum(_decodes(d, p.type, _flipped(p.payload, b)) for d, p in v1 for b in range(8 * len(p.payload))) > 0
    data = (VECTORS / f"v2_{name}.sgnc").read_bytes()
    v2 = _face_packets(model, data)[:4]
    flips = [(d, p, b) for d, p in v2 for b in range(8 * len(p.payload))]
    assert len(flips) > 2000 and not any(_decodes(d, p.type, _flipped(p.payload, b)) for d, p, b in flips)
    container = decode_container(data)
    ref_model = reference_decoder.Model(str(VECTORS / "model.safetensors"))
    first = container.packets[0]
    for bit in range(0, 8 * len(first.payload), 61):
        altered = Packet(first.type, first.seq, first.frame, first.timestamp_ms, _flipped(first.payload, bit))
        with pytest.raises(ValueError):
            reference_decoder.decode_file(ref_model, encode_container(container.header, [altered, *container.packets[1:]]))
