"""Rate control (sganc_stream.latent.rate, bitstream v4): targets met, exact decoding, validation.

The target test runs on a synthetic random-walk sequence with the tests' tiny codec (6×32, presets 0.25/0.5/1):
fast, and the controller is the same as on real clips (benchmarks/rate_control.py measures those with the shipped
model: README "Rate control").
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import copy

from sganc_stream.bitstream.container import (VERSION_RATE, VERSION_RATE_CONTEXT, StreamHeader, decode_container,
                                               encode_container)
from sganc_stream.cli.options import check_stream_arguments, stream_params_from
from sganc_stream.entropy.tables import channel_histogram_table, rebinned
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
from sganc_stream.latent.sequence import decode_bytes, encode_sequence, stream_params
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.training.latent_codec import add_coarser_steps, fit_context
from conftest import TINY_ROWS, TINY_WIDTH

FPS = 25.0


def window_kbps(record_bytes: list[int], fps: float, seconds: float = 10.0) -> list[float]:
    span = int(seconds * fps)
    bits = np.concatenate([[0], np.cumsum(8 * np.asarray(record_bytes))])
    return [(bits[a + span] - bits[a]) / seconds / 1000 for a in range(0, len(record_bytes) - span + 1, int(fps))]


@pytest.fixture(scope="module")
def walk() -> np.ndarray:
    return synthetic_latents("walk", 600, TINY_ROWS, TINY_WIDTH, seed=31)


def fixed_kbps(model, latents: np.ndarray, step_index: int) -> float:
    res = encode_sequence(model, latents, StreamParams("open", 4, step_index), FPS)
    return 8 * sum(decode_container(res.data).record_bytes) / (len(latents) / FPS) / 1000


def test_every_10s_window_within_10_percent(tiny_codec, walk):
    """Targets between the coarsest and the finest preset's rates: every 10-s window within ±10 %, the stream is
    version 4, switches steps, and decodes to exactly what the encoder reconstructed."""
    lo, hi = fixed_kbps(tiny_codec, walk, 2), fixed_kbps(tiny_codec, walk, 0)
    for target in (lo + 0.25 * (hi - lo), lo + 0.7 * (hi - lo)):
        res = encode_sequence(tiny_codec, walk, StreamParams("open", 4, 0, target_kbps=target), FPS)
        container = decode_container(res.data)
        assert container.header.version == VERSION_RATE and len(set(res.step_choices)) >= 2
        windows = window_kbps(container.record_bytes, FPS)
        assert len(windows) >= 10
        assert all(abs(w / target - 1) <= 0.10 for w in windows), (target, windows)
        assert np.array_equal(decode_bytes(tiny_codec, res.data), res.recon)


@pytest.fixture(scope="module")
def coarse_codec(tiny_codec):
    """The tiny codec with presets up to Δ = 16 (``add_coarser_steps``) and temporal-context tables for all of them,
    fitted on its training sequences: wide enough a rate range for 10, 20 and 40 kbit/s on :func:`busy`."""
    model = copy.deepcopy(tiny_codec)
    seqs = [synthetic_latents(k, 40, TINY_ROWS, TINY_WIDTH, seed=i) for i, k in enumerate(["smooth", "walk"] * 3)]
    add_coarser_steps(model, seqs, [2.0, 4.0, 8.0, 16.0])
    model.context_tables = fit_context(model, seqs)
    return model


def busy(frames: int = 800) -> np.ndarray:
    """A stationary clip (an identity plus AR(1) motion, a = 0.9, innovation 0.15), coded at 50 fps: at the coarse codec's
    presets it costs 7–54 kbit/s (temporal context, g = 0), so 10, 20 and 40 kbit/s are all reachable."""
    rng = np.random.default_rng(5)
    e = rng.standard_normal((frames, TINY_ROWS, TINY_WIDTH)) * 0.15
    x = np.zeros_like(e)
    for t in range(1, frames):
        x[t] = 0.9 * x[t - 1] + e[t]
    return (synthetic_latents("walk", 1, TINY_ROWS, TINY_WIDTH, seed=31)[0] + x).astype(np.float32)


@pytest.mark.parametrize("decimation, targets", [(1, (10.0, 20.0, 40.0)), (2, (10.0, 20.0))])
def test_rate_control_with_temporal_context_and_decimation(coarse_codec, decimation, targets):
    """Bitstream v6: rate control together with temporal context (and decimation): targets 10, 20 and 40 kbit/s each
    hold every 10-s window within ±10 % on a clip where all three are reachable (with decimation 2 the finest preset
    costs less than 40: the controller saturates there, as test_unreachable_targets_saturate); the step changes, and
    the stream decodes to exactly what the encoder reconstructed."""
    fps, clip = 50.0, busy()
    for target in targets:
        params = StreamParams("open", 0, 0, target_kbps=target, inter_context="temporal", decimation=decimation)
        res = encode_sequence(coarse_codec, clip, params, fps)
        container = decode_container(res.data)
        assert container.header.version == VERSION_RATE_CONTEXT and len(set(res.step_choices)) >= 2
        windows = window_kbps(container.record_bytes, container.header.fps)
        assert len(windows) >= 5
        assert all(abs(w / target - 1) <= 0.10 for w in windows), (target, windows)
        assert np.array_equal(decode_bytes(coarse_codec, res.data), res.recon)


def test_step_changes_only_where_groups_start(tiny_codec, walk):
    g = 5
    res = encode_sequence(tiny_codec, walk[:200], StreamParams("open", g, 0, target_kbps=16.0), FPS)
    changes = [t for t in range(1, len(res.step_choices)) if res.step_choices[t] != res.step_choices[t - 1]]
    assert changes and all((t - 1) % g == 0 and t > 1 for t in changes)  # the frame after a residual frame
    types = res.frame_types
    assert all(types[t - 1] == "inter+residual" for t in changes)


def test_unreachable_targets_saturate(tiny_codec, walk):
    """Below the coarsest preset's rate the controller stays at the coarsest step; above the finest, the finest."""
    for target, expected in ((1.0, 2), (10_000.0, 0)):
        res = encode_sequence(tiny_codec, walk[:150], StreamParams("open", 4, 0, target_kbps=target), FPS)
        assert set(res.step_choices[5:]) == {expected}


def test_closed_and_intra_modes_rate_control(tiny_codec, walk):
    for mode in ("closed", "intra"):
        res = encode_sequence(tiny_codec, walk[:120], StreamParams(mode, 0, 0, target_kbps=15.0), FPS)
        assert np.array_equal(decode_bytes(tiny_codec, res.data), res.recon)


def test_v4_header_round_trip_and_validation():
    h = StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 25.0, 0, 0, steps=(0.25, 0.5, 1.0), version=VERSION_RATE)
    assert decode_container(encode_container(h, [])).header == h
    for steps in ((0.25,), (0.25, 0.6), (0.5, 0.25), (0.25, 0.5, 0.5), (0.5, 1.0)):  # one, not a multiple, order, first
        bad = StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 25.0, 0, 0, steps=steps, version=VERSION_RATE)
        with pytest.raises(BitstreamError):
            decode_container(encode_container(bad, []))
    with pytest.raises(ValueError):
        StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 25.0, 0, 0, steps=(0.25, 0.5)).to_map()  # v2 cannot


def test_v6_header_round_trip_and_validation():
    """Version 6 = version 5's context and decimation plus version 4's steps; each field only where its version has it."""
    h = StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 12.5, 0, 0, steps=(0.25, 0.5, 1.0), context="temporal",
                     decimation=2, version=VERSION_RATE_CONTEXT)
    assert decode_container(encode_container(h, [])).header == h
    with pytest.raises(BitstreamError):  # a v6 step list is checked as a v4 one
        decode_container(encode_container(StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 25.0, 0, 0, steps=(0.25, 0.6),
                                                       context="temporal", version=VERSION_RATE_CONTEXT), []))
    for version in (VERSION_RATE, 5):  # v4 cannot name a context, v5 cannot switch steps
        with pytest.raises(ValueError):
            StreamHeader("ab" * 32, 6, 32, "open", 4, 0.25, 25.0, 0, 0, steps=(0.25, 0.5), context="temporal",
                         version=version).to_map()
    assert StreamParams("open", 4, 0, target_kbps=20.0, decimation=3).version() == VERSION_RATE_CONTEXT


def test_every_bit_flip_of_a_v4_payload_is_an_error(tiny_codec, walk):
    """The check value covers the step choice: a flipped bit never decodes (first packets of a v4 stream)."""
    res = encode_sequence(tiny_codec, walk[:8], StreamParams("open", 4, 0, target_kbps=16.0), FPS)
    container = decode_container(res.data)
    dec = LatentStreamDecoder(tiny_codec, stream_params(tiny_codec, container.header), container.header.version)
    for p in container.packets[:3]:
        for bit in range(0, 8 * len(p.payload), 3):
            altered = bytearray(p.payload)
            altered[bit // 8] ^= 1 << bit % 8
            with pytest.raises(BitstreamError):
                dec._chosen(p.type, bytes(altered))


def test_options_validate_the_target(tiny_codec):
    args = argparse.Namespace(mode="open", g=10, step=None, keyframe_interval=0, residual_table="irwin_hall",
                              target_kbps=20.0)
    params = stream_params_from(args, tiny_codec)
    assert params.target_kbps == 20.0 and tiny_codec.steps[params.step_index] == min(tiny_codec.steps)
    for bad in (0.5, float("nan"), float("inf"), 1e9):
        with pytest.raises(InputError, match="target rate"):
            check_stream_arguments(argparse.Namespace(**{**vars(args), "target_kbps": bad}))
    with pytest.raises(InputError, match="exclude each other"):
        check_stream_arguments(argparse.Namespace(**{**vars(args), "step": 0.5}))


def test_a_model_with_one_preset_cannot_rate_control(tiny_codec):
    params = StreamParams("open", 4, 1, target_kbps=20.0)
    one = type(tiny_codec)(tiny_codec.rows, tiny_codec.width, tiny_codec.groups, [0.5], tiny_codec.flows,
                           {k: [v[1]] for k, v in tiny_codec.tables.items()}, runner=tiny_codec.runner)
    with pytest.raises(InputError, match="at least two step presets"):
        StreamParams("open", 4, 0, target_kbps=20.0).steps(one)
    assert params.steps(tiny_codec) == (1, 2)  # from 0.5: 0.5 and 1 (0.25 is finer than the unit)


def test_rebinned_and_histogram_tables():
    """A rebinned table of a known distribution puts each fine value's mass where its bin lies; a histogram table
    covers every value it was fitted on, and escapes the others."""
    from sganc_stream.entropy.tables import TOTAL, CodingTable, quantize_pmf

    p = np.array([[0.25, 0.5, 0.25, 0.0]])  # values -1, 0, 1 (and escape)
    t = CodingTable(np.array([-1]), quantize_pmf(p))
    c = rebinned(t, 2)  # coarse 0 covers fine [-1, 1]: ½·P(-1) + P(0) + ½·P(1) = 0.75; coarse ±1 get 0.125 each
    probs = dict(zip(range(int(c.offsets[0]), int(c.offsets[0]) + c.num_symbols - 1), c.freqs[0, :-1] / TOTAL))
    assert abs(probs[0] - 0.75) < 1e-3 and abs(probs[-1] - 0.125) < 1e-3 and abs(probs[1] - 0.125) < 1e-3
    values = np.array([[0, 5], [1, 6], [0, 7], [-2, 5]])
    h = channel_histogram_table(values)
    assert not h.symbols(values.reshape(-1, 2)[0])[1].any() and h.symbols(np.array([40, 5]))[1].tolist() == [True, False]


def test_inspect_names_each_face_packets_step(tiny_codec, tiny_codec_path, walk, tmp_path) -> None:
    """``inspect`` of a rate-controlled stream reads each face packet's step choice (SPEC §4) without the model:
    the steps the encoder chose, frame by frame, and how many packets each step coded."""
    from sganc_stream.cli.latents import inspect_dict

    lo, hi = fixed_kbps(tiny_codec, walk[:150], 2), fixed_kbps(tiny_codec, walk[:150], 0)
    res = encode_sequence(tiny_codec, walk[:150], StreamParams("open", 4, 0, target_kbps=(lo + hi) / 2), FPS)
    assert len(set(res.step_choices)) >= 2
    path = tmp_path / "rated.sgnc"
    path.write_bytes(res.data)
    info = inspect_dict(str(path))
    assert [f["step"] for f in info["frames"]] == [res.steps[j] for j in res.step_choices]
    assert sum(info["steps_used"].values()) == len(res.step_choices) == 150
    fixed = tmp_path / "fixed.sgnc"
    fixed.write_bytes(encode_sequence(tiny_codec, walk[:20], StreamParams("open", 4, 0), FPS).data)
    plain = inspect_dict(str(fixed))
    assert plain["steps_used"] is None and all("step" not in f for f in plain["frames"])
