"""Inputs the fuzz harness (fuzz/, benchmarks/fuzz_campaign.py) found, reduced by hand: each must give the documented error.

Every kind found is fixed where the input enters; each test builds its input here. Also: every target's seeds run
clean, so the harness itself stays usable.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fuzz.targets import OFFER, TARGETS
from sganc_stream.bitstream.container import MAGIC, VERSION, StreamHeader, decode_container
from sganc_stream.bundle import load_bundle
from sganc_stream.errors import BitstreamError, CheckpointError, InputError
from sganc_stream.fileio import load_npy
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import encode_sequence
from sganc_stream.models.checkpoint import _pickle_imports, load_checkpoint
from sganc_stream.peak_memory import peak_rss_mb, reset_peak_rss
from sganc_stream.rtc.signaling import (SignalingError, check_sdp, description_from_line, parse_join,
                                        parse_server_message)
from sganc_stream.rtc.transport import PROTOCOL_VERSION, parse_message

HEADER = StreamHeader("ab" * 32, 4, 8, "open", 3, 0.5, 25.0, 1, 0).to_map()


def file_with_header(**fields: object) -> bytes:
    return MAGIC + bytes([VERSION]) + msgpack.packb({**HEADER, **fields}, use_bin_type=True)


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_target_accepts_its_seeds(name: str) -> None:
    target = TARGETS[name]
    for seed in target.seeds():
        target.run(seed)


# -- stream header: exact wire types, finite ranges ------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"fps": 1e-300}, "out of range"),  # was OverflowError: round(frame * 1000 / fps) of infinity
    ({"fps": float("nan")}, "out of range"),
    ({"step": float("inf")}, "out of range"),
    ({"rows": float("inf")}, "rows has type float"),  # was OverflowError in int()
    ({"model_id": 1 << 40}, "model_id has type int"),  # was bytes(2**40): a terabyte allocated from 9 bytes
    ({"rows": True}, "rows has type bool"),
    ({"mode": 7}, "mode has type int"),
])
def test_header_fields_are_typed_and_bounded(fields: dict[str, object], message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(BitstreamError, match=message):
        decode_container(file_with_header(**fields))
    assert time.perf_counter() - started < 1.0


def test_header_accepts_an_integer_frame_rate() -> None:
    assert StreamHeader.from_map({**HEADER, "fps": 25}).fps == 25.0


def test_hello_with_a_tiny_frame_rate_is_malformed_not_a_crash() -> None:
    stream = {**HEADER, "fps": 1e-300}
    hello = msgpack.packb({"sganc": PROTOCOL_VERSION, "model_id": bytes.fromhex("ab" * 32), "stream": stream, "epoch_ms": 0},
                          use_bin_type=True)
    with pytest.raises(BitstreamError, match="out of range"):
        parse_message(hello, None)


def test_hello_epoch_must_be_an_integer() -> None:
    hello = msgpack.packb({"sganc": PROTOCOL_VERSION, "model_id": bytes(32), "stream": None, "epoch_ms": True}, use_bin_type=True)
    with pytest.raises(BitstreamError, match="malformed hello"):
        parse_message(hello, None)


# -- .npy latents ----------------------------------------------------------------------------------------


def npy_with_header(header: str) -> bytes:
    text = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


@pytest.mark.parametrize("data, message", [
    (b"", "not a readable .npy"),  # was EOFError
    (npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,"), "not a readable .npy"),  # tokenize.TokenError
    (npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 18, 512), }\n"), "header claims"),
    (npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"), "Python objects"),
])
def test_npy_files_fail_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "in.npy"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        load_npy(path)


@pytest.mark.parametrize("value", [1e19, 3.18e38, -3.18e38])
def test_huge_latents_are_refused_before_the_int64_cast_wraps(tiny_codec: LatentCodecModel, value: float) -> None:
    """1e19: was ValueError from rANS (int32). ±3.18e38 (1M-input fuzz run): finite W+ that T's coupling layers turn
    into inf and NaN, which slipped through a ``max() >= limit`` check (NaN compares false)."""
    latents = np.full((2, tiny_codec.rows, tiny_codec.width), value, np.float32)
    from sganc_stream.latent.codec import StreamParams

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one line for the user: no numpy overflow warnings on the way
        with pytest.raises(InputError, match="too large"):
            encode_sequence(tiny_codec, latents, StreamParams())


# -- signaling -------------------------------------------------------------------------------------------

NESTED = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError


def test_nested_json_is_a_malformed_message() -> None:
    with pytest.raises(SignalingError, match="malformed"):
        parse_server_message(NESTED)
    with pytest.raises(SignalingError, match="join message"):
        parse_join(NESTED)
    with pytest.raises(SignalingError, match="not an SDP offer line"):
        description_from_line(base64.b64encode(NESTED.encode()).decode(), "offer")
    with pytest.raises(SignalingError, match="join message"):
        parse_join("[1, 2]")  # was AttributeError on list.get


@pytest.mark.parametrize("sdp, message", [
    (None, "no usable SDP"),
    ("m=application", "malformed SDP"),  # aiortc's parser raises on this
    (OFFER.replace("m=application 47770 UDP/DTLS/SCTP webrtc-datachannel", "m=audio 9 UDP/TLS/RTP/SAVPF 0"),
     "exactly one data channel"),  # aiortc raised OperationError after the call had started
    (OFFER.replace("a=ice-pwd:SD6nup0UFt7usQxwJJ2ZKq\r\n", ""), "ICE credentials"),
])
def test_descriptions_are_checked_before_aiortc_applies_them(sdp: object, message: str) -> None:
    with pytest.raises(SignalingError, match=message):
        check_sdp(sdp, "offer")


def test_a_real_data_channel_offer_passes() -> None:
    assert check_sdp(OFFER, "offer").type == "offer"


# -- bundles and checkpoints -------------------------------------------------------------------------------


def bundle_with_config(path: Path, config: object) -> Path:
    save_file({"codec.x": torch.zeros(1)}, str(path), metadata={"sganc": json.dumps(config)})
    return path


@pytest.mark.parametrize("config, message", [
    ([1, 2], "not a JSON object"),  # was AttributeError on list.get
    (json.loads("[" * 50 + "]" * 50), "not a JSON object"),
])
def test_bundle_metadata_must_be_an_object(tmp_path: Path, config: object, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_bundle(bundle_with_config(tmp_path / "m.safetensors", config))


def test_deeply_nested_bundle_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"codec.x": torch.zeros(1)}, str(path), metadata={"sganc": NESTED})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_bundle(path)


CODEC = {"format": "sganc-bundle", "version": 1,
         "codec": {"rows": 4, "width": 8, "groups": [[0, 2], [2, 4]], "steps": [0.5], "flow": {"couplings": 2, "hidden": 8}}}


@pytest.mark.parametrize("change", [
    {"groups": []},  # was IndexError
    {"rows": 10**9},  # would build 10**9-row tables and flows
    {"width": float("inf")},  # was OverflowError
    {"flow": {"couplings": 10**6, "hidden": 8}},  # a million couplings: a hang while building
    {"flow": {"couplings": 2, "hidden": 4096}},  # hidden size the file's tensors do not hold
    {"groups": [[0, 3], [2, 4]]},
    {"steps": [float("nan")]},
])
def test_latent_codec_config_is_bounded_before_building(tmp_path: Path, change: dict[str, object]) -> None:
    config = {**CODEC, "codec": {**CODEC["codec"], **change}}
    started = time.perf_counter()
    with pytest.raises(CheckpointError):
        LatentCodecModel.from_bundle(load_bundle(bundle_with_config(tmp_path / "c.safetensors", config)))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("generator", [
    {"size": 64, "n_mlp": 10**6},  # a hang while building
    {"size": 64, "style_dim": 10**7},  # 10**14 bytes asked of the allocator
    {"size": 64, "style_dim": 512.0},  # was TypeError inside torch
    {"size": 64, "blur_kernel": list(range(1, 10_000))},
])
def test_generator_config_is_bounded_and_typed(tmp_path: Path, generator: dict[str, object]) -> None:
    path = bundle_with_config(tmp_path / "g.safetensors", {"format": "sganc-bundle", "version": 1, "generator": generator})
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="bad generator config"):
        load_checkpoint(path)
    assert time.perf_counter() - started < 1.0


def test_a_forged_generator_costs_no_memory_before_the_layout_check(tmp_path: Path) -> None:
    if not reset_peak_rss():
        pytest.skip("this OS cannot reset a process's peak memory (/proc/self/clear_refs)")
    generator = {"size": 1024, "style_dim": 1024, "n_mlp": 16, "channel_multiplier": 4, "channel_max": 1024}
    path = bundle_with_config(tmp_path / "g.safetensors", {"format": "sganc-bundle", "version": 1, "generator": generator})
    before = peak_rss_mb()
    with pytest.raises(CheckpointError, match="does not match the expected layout"):
        load_checkpoint(path)
    assert peak_rss_mb() - before < 256  # MB: only the mapping's scaled weights are touched


@pytest.mark.parametrize("opts", [{"input_nc": "abc"}, {"encoder_type": ["x"]}, {"output_size": float("inf")}])
def test_psp_opts_are_typed(tmp_path: Path, opts: dict[str, object]) -> None:
    path = tmp_path / "p.pt"
    torch.save({"state_dict": {}, "opts": opts}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_pickle_scan_of_a_broken_zip_reports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    # an end-of-central-directory record claiming one entry at offset 0: is_zipfile says yes, ZipFile raises
    path.write_bytes(b"junk" + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 0, 0))
    assert _pickle_imports(path) == []  # was UnboundLocalError
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_npy_bytes_of_a_pickle_through_the_target() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    TARGETS["npy"].run(buf.getvalue())  # InputError inside: the target swallows documented errors only


def test_a_timeout_that_replays_fast_is_machine_load_not_a_hang(tmp_path: Path) -> None:
    """libFuzzer's -timeout is wall clock: on a loaded machine a 3 ms input timed out (packet target, 1M run)."""
    from benchmarks.fuzz_campaign import confirm_hang, parse_output

    art = tmp_path / "packet-timeout-1"
    art.write_bytes(bytes(100))
    log = f"==1== ERROR: libFuzzer: timeout after 1 seconds\nTest unit written to {art}\n"
    finding = parse_output(log)["finding"]
    assert finding is not None and finding["kind"] == "hang"
    confirmed = confirm_hang("packet", finding)
    assert confirmed["kind"] == "load" and "CPU s" in str(confirmed["what"])
    gone = {**finding, "what": "1 s | input " + str(tmp_path / "missing")}
    assert confirm_hang("packet", gone) == gone  # nothing to replay: the hang stands
