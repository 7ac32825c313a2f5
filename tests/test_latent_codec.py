import numpy as np
import pytest

from sganc_stream.bitstream.packet import PacketType
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.latent.codec import LatentStreamDecoder, LatentStreamEncoder, StreamParams
from sganc_stream.latent.synthetic import synthetic_latents

from conftest import TINY_ROWS, TINY_WIDTH


def _run(model, params, latents):
    enc, dec = LatentStreamEncoder(model, params), LatentStreamDecoder(model, params)
    types, errs = [], []
    for w in latents:
        coded = enc.encode(w)
        out = dec.decode(coded.type, coded.payload)
        assert np.array_equal(out, coded.recon)  # bit for bit
        types.append(coded.type)
        errs.append(float(np.mean((out - w) ** 2)))
    return types, errs


@pytest.mark.parametrize("mode,g", [("open", 0), ("open", 1), ("open", 3), ("open", 10), ("closed", 0), ("intra", 0)])
@pytest.mark.parametrize("step_index", [0, 2])
def test_decoder_equals_encoder_reconstruction(tiny_codec, mode, g, step_index):
    latents = synthetic_latents("walk", 25, TINY_ROWS, TINY_WIDTH, seed=5)
    types, _ = _run(tiny_codec, StreamParams(mode, g, step_index), latents)
    assert types[0] == PacketType.INTRA
    if mode == "intra":
        assert set(types) == {PacketType.INTRA}
    elif mode == "open" and g:
        assert [i for i, t in enumerate(types) if t == PacketType.INTER_RESIDUAL] == list(range(g, 25, g))
    else:
        assert set(types[1:]) == {PacketType.INTER}


def test_open_loop_drifts_and_residuals_bound_it(tiny_codec):
    latents = synthetic_latents("walk", 60, TINY_ROWS, TINY_WIDTH, seed=6)
    _, never = _run(tiny_codec, StreamParams("open", 0, 2), latents)
    _, g5 = _run(tiny_codec, StreamParams("open", 5, 2), latents)
    _, closed = _run(tiny_codec, StreamParams("closed", 0, 2), latents)
    assert np.mean(never[30:]) > 1.5 * np.mean(g5[30:])
    assert np.mean(closed[30:]) <= np.mean(g5[30:])


def test_keyframes_on_interval_and_request(tiny_codec):
    latents = synthetic_latents("smooth", 12, TINY_ROWS, TINY_WIDTH, seed=7)
    enc = LatentStreamEncoder(tiny_codec, StreamParams("open", 0, 1, keyframe_interval=4))
    types = [enc.encode(w).type for w in latents[:9]]
    assert [i for i, t in enumerate(types) if t == PacketType.INTRA] == [0, 4, 8]
    enc.request_keyframe()
    assert enc.encode(latents[9]).type == PacketType.INTRA
    assert enc.encode(latents[10]).type == PacketType.INTER


def test_smaller_step_costs_more_bits_and_less_error(tiny_codec):
    latents = synthetic_latents("smooth", 20, TINY_ROWS, TINY_WIDTH, seed=8)
    sizes, errs = [], []
    for i in range(3):
        enc = LatentStreamEncoder(tiny_codec, StreamParams("closed", 0, i))
        coded = [enc.encode(w) for w in latents]
        sizes.append(sum(len(c.payload) for c in coded))
        errs.append(np.mean([(c.recon - w) ** 2 for c, w in zip(coded, latents)]))
    assert sizes[0] > sizes[1] > sizes[2] and errs[0] < errs[2]


def test_decoder_errors(tiny_codec):
    latents = synthetic_latents("smooth", 3, TINY_ROWS, TINY_WIDTH, seed=9)
    enc = LatentStreamEncoder(tiny_codec, StreamParams("open", 2, 1))
    coded = [enc.encode(w) for w in latents]
    dec = LatentStreamDecoder(tiny_codec, StreamParams("open", 2, 1))
    with pytest.raises(BitstreamError, match="without a preceding intra"):
        dec.decode(coded[1].type, coded[1].payload)
    dec.decode(coded[0].type, coded[0].payload)
    assert dec.synchronized
    dec.reset()
    assert not dec.synchronized
    with pytest.raises(BitstreamError, match="not a face frame"):
        dec.decode(PacketType.END, b"")


def test_encoder_rejects_bad_frames(tiny_codec):
    enc = LatentStreamEncoder(tiny_codec, StreamParams())
    with pytest.raises(InputError, match="shape"):
        enc.encode(np.zeros((TINY_ROWS + 1, TINY_WIDTH), np.float32))
    bad = np.zeros((TINY_ROWS, TINY_WIDTH), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        enc.encode(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "bidir"}, "coding mode must be one of open, closed, intra"),
    ({"g": 300}, "residual period g must be between 0 and 255, got 300"),
    ({"g": -1}, "residual period g must be between 0 and 255"),
    ({"keyframe_interval": -2}, "keyframe interval must be >= 0"),
    ({"step_index": -1}, "step index must be a non-negative integer"),
    ({"residual": "laplace"}, "residual table must be one of irwin_hall, empirical, got 'laplace'"),
    ({"residual": "empirical", "mode": "closed", "g": 0}, "empirical residual table needs residuals: open mode with g > 0"),
    ({"residual": "empirical", "g": 0}, "empirical residual table needs residuals"),
])
def test_stream_params_reject_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        StreamParams(**kwargs)


def test_empirical_residual_tables_code_and_fit_the_training_residuals(tiny_codec):
    """The training run fitted empirical residual tables; a stream coded with one decodes exactly, differs from the
    Irwin–Hall stream only in its residual frames, and a period without a table is one InputError."""
    from sganc_stream.entropy.irwin_hall import residual_table
    from sganc_stream.training.latent_codec import EMPIRICAL_RESIDUAL_G

    assert sorted(tiny_codec.empirical_residuals) == sorted(EMPIRICAL_RESIDUAL_G)
    lat = synthetic_latents("walk", 21, TINY_ROWS, TINY_WIDTH, seed=1)  # training used seeds 0-5 (conftest)
    ih, types_ih, emp = [], [], []
    for residual, out in (("irwin_hall", ih), ("empirical", emp)):
        params = StreamParams("open", 10, 1, residual=residual)
        enc, dec = LatentStreamEncoder(tiny_codec, params), LatentStreamDecoder(tiny_codec, params)
        assert enc.steps[0].residual is tiny_codec.residual_table(10, 1, residual)
        for w in lat:
            coded = enc.encode(w)
            assert np.array_equal(dec.decode(coded.type, coded.payload), coded.recon)
            out.append(coded.payload)
            types_ih.append(coded.type)
    assert residual_table(10) is tiny_codec.residual_table(10, 1, "irwin_hall")
    assert tiny_codec.empirical_residuals[10][1].freqs.tolist() != residual_table(10).freqs.tolist()
    res = [i for i, t in enumerate(types_ih[:21]) if t == PacketType.INTER_RESIDUAL]
    assert res == [10, 20]
    assert all((a == b) == (i not in res) for i, (a, b) in enumerate(zip(ih, emp)))
    with pytest.raises(InputError, match=r"no empirical residual table for g = 7 \(periods it has: 1, 2, 5, 10, 20, 40, 80\)"):
        LatentStreamEncoder(tiny_codec, StreamParams("open", 7, 1, residual="empirical"))


def test_drift_damping_corrects_drift_and_decodes_exactly(tiny_codec):
    """Damping 0 is the paper's open loop byte for byte; damping 1 sends closed loop's differences (the residuals then
    all zero); in between the drift shrinks; every stream decodes to the encoder's states (encoder-only option)."""
    lat = synthetic_latents("walk", 40, TINY_ROWS, TINY_WIDTH, seed=41)

    def run(params):
        enc, dec = LatentStreamEncoder(tiny_codec, params), LatentStreamDecoder(tiny_codec, params)
        coded = [enc.encode(w) for w in lat]
        for c in coded:
            assert np.array_equal(dec.decode(c.type, c.payload), c.recon)
        return coded

    plain, zero = run(StreamParams("open", 10, 2)), run(StreamParams("open", 10, 2, damping=0.0))
    assert [c.payload for c in plain] == [c.payload for c in zero]
    full, closed = run(StreamParams("open", 10, 2, damping=1.0)), run(StreamParams("closed", 0, 2))
    assert all(np.array_equal(a.state, b.state) for a, b in zip(full, closed))
    err = {a: np.mean([np.mean((c.recon - w) ** 2) for c, w in zip(run(StreamParams("open", 0, 2, damping=a)), lat)])
           for a in (0.0, 0.5)}
    assert err[0.5] < err[0.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"damping": -0.1}, "drift damping must be between 0 and 1, got -0.1"),
    ({"damping": 1.5}, "drift damping must be between 0 and 1"),
    ({"damping": True}, "drift damping must be between 0 and 1"),
    ({"damping": 0.3, "mode": "closed", "g": 0}, "drift damping is for open mode"),
])
def test_stream_params_reject_bad_damping(kwargs, message):
    with pytest.raises(InputError, match=message):
        StreamParams(**kwargs)


def test_quantize_rounds_or_widens_the_zero_bin():
    """Offset 0.5 is np.rint (ties to even: today's integers); a smaller offset f sends |x| < 1 − f to zero and moves
    every threshold by 0.5 − f, symmetrically, so the error stays below 1 − f."""
    from sganc_stream.latent.quantize import quantize

    x = np.array([-2.6, -1.2, -0.84, -0.8, -0.5, 0.0, 0.5, 0.8, 0.84, 1.5, 1.83, 1.84, 2.5])
    assert np.array_equal(quantize(x), np.rint(x).astype(np.int64))
    assert quantize(x, 1 / 6).tolist() == [-2, -1, -1, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert quantize(x, 0.0).tolist() == [-2, -1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2]
    rng = np.random.default_rng(0)
    y = rng.normal(0, 3, 10_000)
    for f in (0.0, 0.2, 0.5):
        q = quantize(y, f)
        assert q.dtype == np.int64 and np.abs(y - q).max() < 1 - f + 1e-12
        assert np.array_equal(quantize(-y, f), -q)


@pytest.mark.parametrize("mode,g", [("closed", 0), ("open", 5)])
def test_dead_zone_sends_more_zeros_keeps_the_error_bounded_and_decodes_exactly(tiny_codec, mode, g):
    """An encoder-only choice: the stream decodes exactly to the encoder's states; more differences are zero than with
    rounding; in closed loop every inter frame's state stays within 1 − f steps of the proxy (the dead zone's error
    is carried, not lost)."""
    lat = synthetic_latents("walk", 30, TINY_ROWS, TINY_WIDTH, seed=17)
    zeros = {}
    for f in (0.5, 0.2):
        params = StreamParams(mode, g, 1, rounding_offset=f, damping=0.5 if mode == "open" else 0.0)
        enc, dec = LatentStreamEncoder(tiny_codec, params), LatentStreamDecoder(tiny_codec, params)
        coded = [enc.encode(w) for w in lat]
        for c in coded:
            assert np.array_equal(dec.decode(c.type, c.payload), c.recon)
        zeros[f] = sum(int((c.values[0] == 0).sum()) for c in coded[1:])
        if mode == "closed":
            step = tiny_codec.steps[1]
            y = np.stack([tiny_codec.to_proxy(w) for w in lat]) / step
            assert all(np.abs(y[t] - c.state).max() < 1 - f + 1e-6 for t, c in enumerate(coded))
    assert zeros[0.2] > zeros[0.5]


@pytest.mark.parametrize("kwargs, message", [
    ({"rounding_offset": 0.6}, "rounding offset must be between 0 and 0.5, got 0.6"),
    ({"rounding_offset": -0.1}, "rounding offset must be between 0 and 0.5"),
    ({"rounding_offset": True}, "rounding offset must be between 0 and 0.5"),
    ({"rounding_offset": 0.2, "mode": "intra", "g": 0}, "intra mode has none"),
])
def test_stream_params_reject_bad_rounding_offsets(kwargs, message):
    with pytest.raises(InputError, match=message):
        StreamParams(**kwargs)


def test_tables_are_fitted_on_the_integers_the_configured_encoder_sends(tiny_codec):
    """coded_integers runs the encoder itself: its differences (repeats left out), their context memory and its
    residuals are exactly those a decoder reads from the stream coded with the same parameters."""
    from sganc_stream.training.latent_codec import _proxies, coded_integers

    walk = synthetic_latents("walk", 13, TINY_ROWS, TINY_WIDTH, seed=23)
    lat = np.repeat(walk[[0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], 2, axis=0)  # decimation 2 codes lat[::2]
    params = StreamParams("open", 4, 1, damping=0.3, rounding_offset=0.25, decimation=2)
    v, prev, r = coded_integers(tiny_codec, _proxies(tiny_codec, [lat], 1000), params)
    dec = LatentStreamDecoder(tiny_codec, params, params.version())
    enc = LatentStreamEncoder(tiny_codec, params)
    want_v, want_prev, want_r, memory = [], [], [], np.zeros(tiny_codec.channels, np.int64)
    for w in lat[::2]:
        c = enc.encode(w)
        parts = dec.step(c.type, c.payload)
        if c.type.is_intra:
            memory = np.zeros_like(memory)
        elif c.payload:  # not a repeat
            want_v.append(parts[0][0])
            want_prev.append(memory)
            memory = parts[0][0]
            if len(parts) > 1:
                want_r.append(parts[1][0])
    assert len(v) == len(want_v) == 13 and len(r) == len(want_r) == 3  # 14 inter packets, one a repeat
    assert np.array_equal(v, np.stack(want_v)) and np.array_equal(prev, np.stack(want_prev))
    assert np.array_equal(r, np.stack(want_r))
