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
