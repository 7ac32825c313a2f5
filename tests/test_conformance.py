"""Conformance vectors (bitstream_spec/vectors): the library and the independent reference decoder agree.

What must hold on every machine (SPEC §7): the integer decoder states exactly, and T⁻¹'s float32 output within
|a − b| ≤ DECODED_ATOL + DECODED_RTOL·|b|. The vectors were made on another machine: nothing else is compared
with them. Encoder bytes (E and T run in float before the quantizer) are only compared on this machine, at one
thread count. CI runs this module a second time as an older CPU would (MKL_ENABLE_INSTRUCTIONS=SSE4_2,
ATEN_CPU_CAPABILITY=default).
"""

import copy
import hashlib
from dataclasses import replace
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sganc_stream.bitstream.container import (VERSION, VERSION_CONTEXT, VERSION_RATE, VERSION_RATE_CONTEXT, VERSION_RESIDUAL,
                                               decode_container, has_v5_tools, switches_steps,
                                              encode_container)
from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.bundle import load_bundle
from sganc_stream.errors import BitstreamError
from sganc_stream.latent.codec import LatentStreamDecoder
from sganc_stream.latent.model import DECODED_ATOL, DECODED_RTOL, load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, interpolate, stream_params
from sganc_stream.models.recipe import tolerance_excess

SPEC = Path(__file__).resolve().parents[1] / "bitstream_spec"
sys.path.insert(0, str(SPEC))
import reference_decoder  # noqa: E402

VECTORS = SPEC / "vectors"
CASES = sorted(p.name[: -len(".sgnc")] for p in VECTORS.glob("*.sgnc"))
# This build writes VERSION, VERSION_RESIDUAL with empirical residual tables, VERSION_RATE with rate control,
# VERSION_CONTEXT with temporal context or decimation and VERSION_RATE_CONTEXT with both: its encoder is checked
# against those.
WRITTEN = [c for c in CASES
           if (VECTORS / f"{c}.sgnc").read_bytes()[4] in (VERSION, VERSION_RESIDUAL, VERSION_RATE, VERSION_CONTEXT,
                                                              VERSION_RATE_CONTEXT)]
# Model files of the vectors: model.safetensors (version 1 file), model_empirical.safetensors (the same model plus
# empirical residual tables, packed: bundle format v2), model_context.safetensors (the same model plus temporal-context
# tables). A case's header names its model by id.
MODEL_FILES = sorted(p.name for p in VECTORS.glob("model*.safetensors"))


def model_file(case: str) -> str:
    """The vectors' model file whose id the case's stream header carries."""
    wanted = decode_container((VECTORS / f"{case}.sgnc").read_bytes()).header.model_id
    (name,) = [f for f in MODEL_FILES if _models()[f].model_id == wanted]
    return name


_LOADED: dict[str, object] = {}


def _models() -> dict[str, object]:
    if not _LOADED:
        _LOADED.update({f: load_latent_codec(VECTORS / f) for f in MODEL_FILES})
    return _LOADED


@pytest.fixture(scope="module")
def model():
    return load_latent_codec(VECTORS / "model.safetensors")


def test_vectors_present():
    assert len(CASES) >= 5


def test_vectors_of_both_versions_present():
    versions = [(VECTORS / f"{case}.sgnc").read_bytes()[4] for case in CASES]
    assert versions.count(1) >= 5 and versions.count(2) >= 7 and versions.count(3) >= 2 and versions.count(4) >= 3
    assert versions.count(5) >= 4 and versions.count(6) >= 2
    kinds = {p.type for case in CASES for p in decode_container((VECTORS / f"{case}.sgnc").read_bytes()).packets}
    assert {PacketType.NO_FACE, PacketType.NEW_FACE} <= kinds


def _states_and_floats(model, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(integer states after each face packet (faces, C) int64, decoded W+ (frames, rows, width) float32, NaN where
    a frame has no face), packet by packet (decimated streams: then interpolated)."""
    container = decode_container(data)
    dec = LatentStreamDecoder(model, stream_params(model, container.header), container.header.version)
    states, decoded = [], []
    for p in container.packets:
        if p.type.is_frame:
            decoded.append(dec.decode(p.type, p.payload))
            states.append(dec.state)
        else:
            decoded.append(np.full((model.rows, model.width), np.nan, np.float32))
    frames = interpolate(np.array(decoded, np.float32), [p.type.is_intra for p in container.packets],
                         container.header.decimation)[0]
    return np.array(states, np.int64).reshape(len(states), -1), frames


def assert_floats_conform(decoded: np.ndarray, expected: np.ndarray) -> None:
    """No-face frames (NaN) in the same places; face frames within the SPEC §7 float tolerance."""
    assert np.array_equal(np.isnan(decoded), np.isnan(expected))
    face = ~np.isnan(expected)
    assert tolerance_excess(decoded[face], expected[face], DECODED_RTOL, DECODED_ATOL) <= 0


@pytest.mark.parametrize("case", CASES)
def test_library_decodes_vectors(case):
    states, decoded = _states_and_floats(_models()[model_file(case)], (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))  # integers: exact everywhere
    assert_floats_conform(decoded, np.load(VECTORS / f"{case}.decoded.npy"))


@pytest.mark.parametrize("case", CASES)
def test_reference_decoder_agrees(case):
    ref_model = reference_decoder.Model(str(VECTORS / model_file(case)))
    assert ref_model.model_id == _models()[model_file(case)].model_id
    states, decoded = reference_decoder.decode_file(ref_model, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))
    assert_floats_conform(decoded, np.load(VECTORS / f"{case}.decoded.npy"))


def test_reference_decoder_reads_a_packed_model(tmp_path):
    """A model file written packed by the library (format v2, SPEC §5) reads, in the reference decoder, as the same
    tensors and model id as the vectors' version 1 file, and decodes a vector to the same integer states."""
    packed = tmp_path / "packed.safetensors"
    load_bundle(VECTORS / "model.safetensors").save(packed)
    meta = json.loads(safe_open(str(packed), framework="np").metadata()["sganc"])
    assert meta["version"] == 2 and any(k.startswith("codec.tables.") for k in meta["packed"])
    raw, ref = reference_decoder.Model(str(VECTORS / "model.safetensors")), reference_decoder.Model(str(packed))
    assert ref.model_id == raw.model_id == load_latent_codec(packed).model_id
    assert all(np.array_equal(ref.tensors[k], t) and ref.tensors[k].dtype == t.dtype for k, t in raw.tensors.items())
    case = "v2_open_g3_keyint8_escapes"
    states, _ = reference_decoder.decode_file(ref, (VECTORS / f"{case}.sgnc").read_bytes())
    assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy"))


def test_reference_decoder_reads_a_grid8_model_and_decodes_its_stream(tmp_path):
    """A compact model (flow weights snapped to the grid8 grid, format v3, SPEC §5) reads in the reference decoder as
    the library reads it (same weights, same model id), and a stream the library codes with it decodes there to the
    library decoder's integer states, with T⁻¹'s floats within SPEC §7."""
    from sganc_stream.bundle import Bundle, snap_to_grid8

    src = load_bundle(VECTORS / "model.safetensors")
    compact = tmp_path / "compact.safetensors"
    Bundle({k: snap_to_grid8(v) if k.startswith("codec.flow.") else v for k, v in src.tensors.items()}, src.config).save(compact)
    meta = json.loads(safe_open(str(compact), framework="np").metadata()["sganc"])
    assert meta["version"] == 3 and any(e.get("form") == "grid8" for e in meta["packed"].values())
    ref, codec = reference_decoder.Model(str(compact)), load_latent_codec(compact)
    assert ref.model_id == codec.model_id != src.model_id
    lib = load_bundle(compact, framework="numpy")
    assert all(np.array_equal(ref.tensors[k], t) and ref.tensors[k].dtype == t.dtype for k, t in lib.tensors.items())
    case = "v2_open_g3_keyint8_escapes"
    latents = np.load(VECTORS / f"{case}.input.npy")
    res = encode_sequence(codec, latents, stream_params(load_latent_codec(VECTORS / "model.safetensors"),
                                                        decode_container((VECTORS / f"{case}.sgnc").read_bytes()).header))
    states, decoded = reference_decoder.decode_file(ref, res.data)
    dec = LatentStreamDecoder(codec, stream_params(codec, decode_container(res.data).header))
    ours = [(dec.decode(p.type, p.payload), dec.state) for p in decode_container(res.data).packets if p.type.is_frame]
    assert np.array_equal(states, np.stack([s for _, s in ours]))
    np.testing.assert_allclose(decoded[~np.isnan(decoded).all(axis=(1, 2))], np.stack([w for w, _ in ours]),
                               rtol=DECODED_RTOL, atol=DECODED_ATOL)


def _new_faces(data: bytes) -> list[int]:
    """Source frames where a new face starts (a decimated stream's packet k is source frame k·d)."""
    c = decode_container(data)
    return [p.frame * c.header.decimation for p in c.packets if p.type == PacketType.NEW_FACE]


def test_v5_vectors_use_temporal_context_and_decimation():
    """The v5 vectors hold both tools, together and apart, and repeats; the v6 vectors (rate control) both tools and
    repeats; no other version names either."""
    headers = [decode_container((VECTORS / f"{c}.sgnc").read_bytes()).header for c in CASES]
    v5 = [h for h in headers if h.version == VERSION_CONTEXT]
    assert {(h.context, h.decimation > 1) for h in v5} >= {("temporal", False), ("temporal", True), ("factorized", True)}
    v6 = [h for h in headers if h.version == VERSION_RATE_CONTEXT]
    assert {h.context for h in v6} == {"temporal"} and any(h.decimation > 1 for h in v6) and all(h.steps for h in v6)
    assert all(h.context == "factorized" and h.decimation == 1 for h in headers if not has_v5_tools(h.version))
    repeats = [p for c in CASES for p in decode_container((VECTORS / f"{c}.sgnc").read_bytes()).packets
               if p.type == PacketType.INTER and not p.payload]
    assert len(repeats) >= 2  # v5 repeats: all-zero differences as empty inter packets
    v6_repeats = [p for c in CASES if c.startswith("v6_")
                  for p in decode_container((VECTORS / f"{c}.sgnc").read_bytes()).packets
                  if p.type == PacketType.INTER and not p.payload]
    assert len(v6_repeats) >= 2  # repeats carry no step choice


def _target_kbps(case: str) -> str:
    """A rate-controlled case's target (not in the stream: only the steps it chose are); "-" for the others."""
    if not switches_steps((VECTORS / f"{case}.sgnc").read_bytes()[4]):
        return "-"
    sys.path.insert(0, str(SPEC))
    import make_vectors  # noqa: E402 (imports training code: only here)

    return str(make_vectors.cases()[case][1].target_kbps)


def test_v4_vectors_switch_steps():
    """Every rate-controlled vector changes its step at least once, and only where a group starts."""
    for case in CASES:
        data = (VECTORS / f"{case}.sgnc").read_bytes()
        if not switches_steps(data[4]):
            continue
        model = _models()[model_file(case)]
        container = decode_container(data)
        dec = LatentStreamDecoder(model, stream_params(model, container.header), container.header.version)
        chosen = []
        for p in container.packets:
            if p.type.is_frame and p.payload:  # a repeat (v6) names no step
                chosen.append(dec._chosen(p.type, p.payload)[0])
            if p.type.is_frame:
                dec.step(p.type, p.payload)  # the context memory (v6 with temporal context)
        assert len(set(chosen)) >= 2


ENCODE_ALL = """
import hashlib, sys
import numpy as np, torch
from pathlib import Path
from sganc_stream.bitstream.container import decode_container
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, interpolate, stream_params
torch.set_num_threads(1)
v = Path(sys.argv[1])
from dataclasses import replace
for arg in sys.argv[2:]:
    case, model_file, target = arg.split("=")
    m = load_latent_codec(v / model_file)
    container = decode_container((v / f"{case}.sgnc").read_bytes())
    new_faces = [p.frame * container.header.decimation for p in container.packets if p.type == PacketType.NEW_FACE]
    params = stream_params(m, container.header)
    if target != "-":
        params = replace(params, target_kbps=float(target))
    data = encode_sequence(m, np.load(v / f"{case}.input.npy"), params, fps=25.0, new_faces=new_faces).data
    print(case, hashlib.sha256(data).hexdigest())
"""


def test_encoder_is_deterministic_on_one_machine():
    """The bytes of an encoder run are exact for one machine and thread count: again in this process, and in
    another process, they are the same, and they decode to exactly what the encoder reconstructed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digests = {}
        for case in WRITTEN:
            model = _models()[model_file(case)]
            data = (VECTORS / f"{case}.sgnc").read_bytes()
            params = stream_params(model, decode_container(data).header)
            if _target_kbps(case) != "-":
                params = replace(params, target_kbps=float(_target_kbps(case)))
            latents = np.load(VECTORS / f"{case}.input.npy")
            first, second = (encode_sequence(model, latents, params, fps=25.0, new_faces=_new_faces(data))
                             for _ in range(2))
            assert first.data == second.data
            _, decoded = _states_and_floats(model, first.data)
            assert np.array_equal(decoded, first.recon, equal_nan=True)  # the decoder gives what the encoder made
            digests[case] = hashlib.sha256(first.data).hexdigest()
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", ENCODE_ALL, str(VECTORS), *(f"{c}={model_file(c)}={_target_kbps(c)}" for c in WRITTEN)],
                         capture_output=True, text=True,
                         timeout=300, env=env, check=True, cwd=SPEC.parent).stdout
    assert dict(line.split() for line in out.splitlines()) == digests


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
