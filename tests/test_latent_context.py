"""Temporal context for latent differences (latent/context.py) and the v5 streams that use it."""

import copy

import numpy as np
import pytest

from sganc_stream.bitstream.container import decode_container
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.entropy.tables import TOTAL
from sganc_stream.errors import BitstreamError, CheckpointError, InputError
from sganc_stream.latent.codec import LatentStreamDecoder, LatentStreamEncoder, StreamParams
from sganc_stream.latent.context import CONTEXTS, ContextTables, difference_context, fit_context_tables
from sganc_stream.latent.model import LatentCodecModel, load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.training.latent_codec import fit_context, fit_empirical_residuals, load_latent_sequences
from sganc_stream.training.latent_files import find_latent_files

from conftest import TINY_ROWS, TINY_WIDTH


@pytest.fixture(scope="module")
def ctx_codec(tiny_codec: LatentCodecModel) -> LatentCodecModel:
    """The tiny codec plus context tables fitted on its training sequences (seeds 0–5)."""
    model = copy.copy(tiny_codec)
    seqs = [synthetic_latents(k, 40, TINY_ROWS, TINY_WIDTH, seed=i) for i, k in enumerate(["smooth", "walk"] * 3)]
    model.context_tables = fit_context(model, seqs, classes=4)
    return model


def test_difference_context_is_the_sign_of_the_previous_difference():
    assert difference_context(np.array([-7, -1, 0, 1, 300])).tolist() == [0, 0, 1, 2, 2]


def test_fitted_tables_are_integer_rows_of_the_stated_shape(ctx_codec):
    for t, step in zip(ctx_codec.context_tables, ctx_codec.steps):
        assert t.freqs.shape[0] == CONTEXTS * 4 and t.num_classes == 4
        assert (t.freqs.sum(axis=1) == TOTAL).all() and (t.freqs >= 1).all()
        assert t.classes.shape == (ctx_codec.channels,) and set(np.unique(t.classes)) == {0, 1, 2, 3}
        assert (t.offsets == t.offsets[0]).all() and t.offsets[0] <= 0
    # classes are ordered by the channels' share of zero differences: after a zero difference, each class's row gives
    # zero more probability than the class before
    t = ctx_codec.context_tables[0]
    zero_after_zero = t.freqs[1 * 4:2 * 4, -t.offsets[0]]
    assert (np.diff(zero_after_zero) > 0).all() and zero_after_zero[-1] > TOTAL // 2


def test_table_rows_follow_context_and_class(ctx_codec):
    t = ctx_codec.context_tables[1]
    prev = np.zeros(ctx_codec.channels, np.int64)
    prev[:5] = [-3, -1, 0, 1, 9]
    table = t.table(prev)
    rows = (np.clip(prev, -1, 1) + 1) * t.num_classes + t.classes
    assert np.array_equal(table.freqs, t.freqs[rows]) and np.array_equal(table.offsets, t.offsets[rows])


@pytest.mark.parametrize("kwargs", [{"freqs_rows": 4}, {"class_value": 9}, {"offsets_len": 2}])
def test_context_tables_reject_bad_shapes(kwargs):
    rows = kwargs.get("freqs_rows", 6)
    freqs = np.full((rows, 4), TOTAL // 4, np.int32)
    classes = np.array([0, 1, kwargs.get("class_value", 1)])
    offsets = np.zeros(kwargs.get("offsets_len", rows), np.int64)
    with pytest.raises(ValueError, match="context tables need"):
        ContextTables(classes, offsets, freqs)


def test_fit_rejects_too_little_data_and_bad_class_counts(ctx_codec):
    c = ctx_codec.channels
    with pytest.raises(ValueError, match="at least one coded difference"):
        fit_context_tables(np.zeros((0, c), np.int64), np.zeros((0, c), np.int64))
    with pytest.raises(ValueError, match="at least one coded difference"):
        fit_context_tables(np.zeros((3, c), np.int64), np.zeros((2, c), np.int64))
    with pytest.raises(ValueError, match="classes must be"):
        fit_context_tables(np.zeros((3, c), np.int64), np.zeros((3, c), np.int64), classes=0)
    with pytest.raises(InputError, match="at least 2 coded frames"):
        fit_context(ctx_codec, [synthetic_latents("walk", 1, TINY_ROWS, TINY_WIDTH, seed=1)])


@pytest.mark.parametrize("mode,g,keyint", [("open", 3, 0), ("open", 0, 0), ("closed", 0, 5)])
def test_temporal_streams_decode_to_the_encoders_states_and_cost_less(ctx_codec, mode, g, keyint):
    """Exact round trip, packet by packet and through a file; the integers (states) are those of the factorized
    stream, only the bytes of inter packets change; held-out data costs fewer bits than the factorized tables."""
    lat = synthetic_latents("walk", 30, TINY_ROWS, TINY_WIDTH, seed=11)
    out = {}
    for ic in ("factorized", "temporal"):
        params = StreamParams(mode, g, 1, keyint, inter_context=ic)
        enc, dec = LatentStreamEncoder(ctx_codec, params), LatentStreamDecoder(ctx_codec, params, params.version())
        states, sizes = [], []
        for w in lat:
            c = enc.encode(w)
            assert np.array_equal(dec.decode(c.type, c.payload), c.recon)
            assert np.array_equal(dec.state, c.state)
            states.append(c.state)
            sizes.append((c.type, len(c.payload)))
        res = encode_sequence(ctx_codec, lat, params)
        assert res.data[4] == (5 if ic == "temporal" else 2)
        assert np.array_equal(decode_bytes(ctx_codec, res.data), res.recon)
        out[ic] = (states, sizes, len(res.data))
    assert all(np.array_equal(a, b) for a, b in zip(out["factorized"][0], out["temporal"][0]))
    assert [s for t, s in out["factorized"][1] if t.is_intra] == [s for t, s in out["temporal"][1] if t.is_intra]
    assert out["temporal"][2] < out["factorized"][2]


def test_context_comes_from_decoded_differences_only(ctx_codec):
    """The decoder's context memory is the difference part it decoded last (zero after an intra frame), and a packet
    decoded with another memory than the encoder's fails or gives other integers: the context is real."""
    params = StreamParams("open", 4, 1, inter_context="temporal")
    lat = synthetic_latents("walk", 12, TINY_ROWS, TINY_WIDTH, seed=12)
    enc, dec = LatentStreamEncoder(ctx_codec, params), LatentStreamDecoder(ctx_codec, params, 5)
    coded = [enc.encode(w) for w in lat]
    prev_state = None
    for c in coded:
        before = copy.copy(dec)
        parts = dec.step(c.type, c.payload)
        assert np.array_equal(dec.state, c.state)
        if c.type.is_intra:
            assert not dec._previous.any()
        else:
            assert np.array_equal(dec._previous, parts[0][0])
            v = parts[0][0] + (parts[1][0] if c.type == PacketType.INTER_RESIDUAL else 0)
            assert np.array_equal(c.state - prev_state, v)
            if before._previous.any():  # with a wrong memory the same bytes no longer give the same integers
                wrong = copy.copy(before)
                wrong._previous = np.zeros_like(before._previous)
                try:
                    assert not np.array_equal(wrong.step(c.type, c.payload)[0][0], parts[0][0])
                except BitstreamError:  # the other outcome: the payload does not decode (check value)
                    pass
        prev_state = c.state


def test_temporal_context_without_tables_is_one_input_error(tiny_codec, ctx_codec):
    with pytest.raises(InputError, match="no temporal-context tables"):
        LatentStreamEncoder(tiny_codec, StreamParams("open", 10, 1, inter_context="temporal"))
    data = encode_sequence(ctx_codec, synthetic_latents("walk", 5, TINY_ROWS, TINY_WIDTH, seed=3),
                           StreamParams("open", 2, 1, inter_context="temporal")).data
    assert decode_container(data).header.context == "temporal"


@pytest.mark.parametrize("kwargs, message", [
    ({"inter_context": "cabac"}, "inter context must be one of factorized, temporal, got 'cabac'"),
    ({"inter_context": "temporal", "mode": "intra"}, "intra mode has none"),
    ({"decimation": 0}, "decimation must be an integer between 1 and 16, got 0"),
    ({"decimation": 17}, "decimation must be an integer between 1 and 16"),
    ({"decimation": 2.0}, "decimation must be an integer"),
])
def test_stream_params_reject_bad_v5_options(kwargs, message):
    with pytest.raises(InputError, match=message):
        StreamParams(**kwargs)


def test_bundle_round_trip_keeps_the_tables_and_bad_tables_are_one_error(ctx_codec, tmp_path):
    from sganc_stream.bundle import Bundle, load_bundle

    path = tmp_path / "ctx.safetensors"
    model_id = ctx_codec.save(path)
    back = load_latent_codec(path)
    assert back.model_id == model_id != ctx_codec.model_id
    for a, b in zip(ctx_codec.context_tables, back.context_tables):
        assert np.array_equal(a.classes, b.classes) and np.array_equal(a.offsets, b.offsets)
        assert np.array_equal(a.freqs, b.freqs)
    bundle = load_bundle(path)
    tensors = dict(bundle.tensors)
    tensors["codec.context.0.classes"] = tensors["codec.context.0.classes"][:-1]
    Bundle(tensors, bundle.config).save(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="temporal-context tables do not cover"):
        load_latent_codec(tmp_path / "bad.safetensors")
    tensors = dict(bundle.tensors)
    del tensors["codec.context.2.freqs"]
    Bundle(tensors, bundle.config).save(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="malformed latent codec"):
        load_latent_codec(tmp_path / "missing.safetensors")


def test_repeated_frames_are_empty_inter_packets_in_v5_only(ctx_codec):
    """An all-zero difference (a repeated source frame) is an inter packet with an empty payload in a v5 stream; it
    keeps the state and the context memory, and the stream decodes exactly; a v2 stream codes it in full."""
    lat = synthetic_latents("walk", 12, TINY_ROWS, TINY_WIDTH, seed=13)[[0, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7]]
    v5 = encode_sequence(ctx_codec, lat, StreamParams("open", 0, 1, inter_context="temporal"))
    v2 = encode_sequence(ctx_codec, lat, StreamParams("open", 0, 1))
    empty = [i for i, c in enumerate(v5.coded) if not c.payload]
    assert empty == [4, 5, 9] and all(v2.coded[i].payload for i in empty)
    assert np.array_equal(decode_bytes(ctx_codec, v5.data), v5.recon)
    dec = LatentStreamDecoder(ctx_codec, StreamParams("open", 0, 1, inter_context="temporal"), 5)
    for i, c in enumerate(v5.coded):
        memory = dec._previous.copy()
        dec.step(c.type, c.payload)
        assert np.array_equal(dec.state, c.state)
        if i in empty:
            assert np.array_equal(dec._previous, memory)
    with pytest.raises(BitstreamError, match="corrupted payload"):  # v2: an empty payload is corrupt
        LatentStreamDecoder(ctx_codec, StreamParams("open", 0, 1), 2).step(PacketType.INTRA, b"")


def _error_line(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sganc-stream fit-context-tables: error: ") and needle in err[0], err


def test_fit_context_tables_command_adds_coarser_presets(tiny_codec_path, tmp_path, capsys):
    """`fit-context-tables --add-steps` adds presets (integer multiples of one) with every table, keeps the flows,
    the existing presets' difference and intra tables and the default step, and the new presets code streams that
    decode exactly; a step no preset divides is one line (exit 2) and writes nothing."""
    from sganc_stream.bundle import Bundle, load_bundle
    from sganc_stream.cli import main

    lat = tmp_path / "lat"
    lat.mkdir()
    for i in range(3):
        np.save(lat / f"{i}.npy", synthetic_latents("walk", 30, TINY_ROWS, TINY_WIDTH, seed=60 + i))
    out = tmp_path / "coarse.safetensors"
    assert main(["fit-context-tables", str(tiny_codec_path), str(lat), "--out", str(out), "--classes", "3", "--quiet",
                 "--add-steps", "4", "2", "1"]) == 0  # 1 is a preset already
    printed = capsys.readouterr().out
    assert "step presets 2, 4 added" in printed and "presets 0.25, 0.5, 1, 2, 4, default step 0.5" in printed
    assert "step presets 1 are presets already" in printed
    before, after = load_bundle(tiny_codec_path), load_bundle(out)
    flows = [k for k in before.tensors if k.startswith("codec.flow.")]
    assert flows and all(np.array_equal(after.tensors[k], before.tensors[k]) for k in flows)
    for k in before.tensors:
        if k.startswith(("codec.tables.intra.", "codec.tables.diff.")):
            assert np.array_equal(after.tensors[k], before.tensors[k]), k
    model = load_latent_codec(out)
    assert model.steps == [0.25, 0.5, 1.0, 2.0, 4.0] and len(model.context_tables) == 5
    # commands without --step code at the step they did before (the old middle preset), not the new middle one
    assert model.default_step == 0.5 and model.step_index(None) == 1
    assert load_latent_codec(tiny_codec_path).step_index(None) == 1
    wrong = Bundle(after.tensors, {**after.config, "codec": {**after.config["codec"], "default_step": 3.0}})
    with pytest.raises(CheckpointError, match="default_step"):
        LatentCodecModel.from_bundle(wrong, source="wrong")
    assert all(len(t) == 5 for t in model.empirical_residuals.values())
    walk = synthetic_latents("walk", 40, TINY_ROWS, TINY_WIDTH, seed=78)
    for step_index in (3, 4):
        res = encode_sequence(model, walk, StreamParams("open", 4, step_index, inter_context="temporal"))
        assert np.array_equal(decode_bytes(model, res.data), res.recon)
    bad = tmp_path / "bad.safetensors"
    for step, needle in (("0.6", "step 0.6 is not an integer multiple"), ("inf", "finite and positive, got inf"),
                         ("nan", "finite and positive, got nan"), ("-2", "finite and positive, got -2")):
        assert main(["fit-context-tables", str(tiny_codec_path), str(lat), "--out", str(bad), "--add-steps", step]) == 2
        _error_line(capsys, needle)
        assert not bad.exists()


def test_fit_context_tables_command_adds_tables_to_a_bundle(tiny_codec_path, tmp_path, capsys):
    """`fit-context-tables` gives a model without tables (the tiny codec, as models made before v5) tables for every
    preset, keeps everything else, and the result codes temporal streams that decode exactly; bad inputs are one line
    each (exit 2) and write nothing."""
    from sganc_stream.bundle import load_bundle
    from sganc_stream.cli import main

    lat = tmp_path / "lat"
    lat.mkdir()
    for i, kind in enumerate(["smooth", "walk", "walk"]):
        np.save(lat / f"{i}.npy", synthetic_latents(kind, 30, TINY_ROWS, TINY_WIDTH, seed=40 + i))
    out = tmp_path / "ctx.safetensors"
    assert main(["fit-context-tables", str(tiny_codec_path), str(lat), "--out", str(out), "--classes", "3"]) == 0
    printed = capsys.readouterr().out
    assert "and empirical residual tables (g 1, 2, 5, 10, 20, 40, 80) fitted on 90 frames of 3 sequences" in printed
    before, after = load_bundle(tiny_codec_path), load_bundle(out)
    refitted = ("codec.context.", "codec.tables.residual.")
    kept = {k for k in after.tensors if not k.startswith(refitted)}
    assert kept == {k for k in before.tensors if not k.startswith(refitted)}
    assert all(np.array_equal(after.tensors[k], before.tensors[k]) for k in kept)
    assert after.model_id != before.model_id
    model = load_latent_codec(out)
    # the residual tables are those of the residuals this encoder (open loop, g 10, rounding) sends on these latents
    seqs = load_latent_sequences(find_latent_files([str(lat)]))
    want = fit_empirical_residuals(load_latent_codec(tiny_codec_path), seqs, sorted(model.empirical_residuals), 4000,
                                   StreamParams("open", 10, 0))
    assert sorted(want) == [1, 2, 5, 10, 20, 40, 80]
    assert all(np.array_equal(a.freqs, b.freqs) and np.array_equal(a.offsets, b.offsets)
               for g in want for a, b in zip(model.empirical_residuals[g], want[g]))
    assert [t.num_classes for t in model.context_tables] == [3, 3, 3]
    walk = synthetic_latents("walk", 40, TINY_ROWS, TINY_WIDTH, seed=77)
    res = encode_sequence(model, walk, StreamParams("open", 4, 1, inter_context="temporal"))
    assert decode_container(res.data).header.version == 5
    assert np.array_equal(decode_bytes(model, res.data), res.recon)
    # refitting replaces the tables (in place: --out may be the input)
    assert main(["fit-context-tables", str(out), str(lat / "1.npy"), "--out", str(out), "--quiet"]) == 0
    assert [t.num_classes for t in load_latent_codec(out).context_tables] == [8, 8, 8]
    # tables for another encoder (closed loop with a dead zone) are fitted on what it sends: other rows
    dz = tmp_path / "dz.safetensors"
    capsys.readouterr()
    assert main(["fit-context-tables", str(tiny_codec_path), str(lat), "--out", str(dz), "--classes", "3", "--quiet",
                 "--mode", "closed", "--rounding-offset", "0.2"]) == 0
    out_line = capsys.readouterr().out
    assert "for the closed-loop encoder with g 0, damping 0, rounding offset 0.2, decimation 1" in out_line
    assert load_bundle(dz).config["codec"]["tables_encoder"] == {"mode": "closed", "g": 0, "drift_damping": 0.0,
                                                                 "rounding_offset": 0.2, "decimation": 1}
    assert load_latent_codec(dz).tables_encoder == load_bundle(dz).config["codec"]["tables_encoder"]  # auto follows it
    assert main(["inspect", str(dz)]) == 0  # a user sees which encoder options the tables match
    assert ("tables fitted for --mode closed --g 0 --drift-damping 0 --rounding-offset 0.2 --decimation 1"
            in capsys.readouterr().out)
    assert "residual" not in out_line  # the closed loop sends no residuals: the model's residual tables are kept
    closed = load_bundle(dz)
    assert all(np.array_equal(closed.tensors[k], before.tensors[k]) for k in before.tensors
               if k.startswith("codec.tables.residual."))
    assert any(not np.array_equal(a.freqs, b.freqs) for a, b in zip(load_latent_codec(dz).context_tables,
                                                                     model.context_tables))
    capsys.readouterr()
    np.save(tmp_path / "wide.npy", synthetic_latents("walk", 5, TINY_ROWS, 16))
    bad = tmp_path / "bad.safetensors"
    for args, needle in (([str(lat), "--out", str(bad), "--classes", "0"], "--classes must be between 1 and 64, got 0"),
                         ([str(lat), "--out", str(bad), "--max-frames", "1"], "--max-frames must be at least 2"),
                         ([str(lat), "--out", str(bad), "--rounding-offset", "0.9"], "rounding offset must be between"),
                         ([str(lat), "--out", str(bad), "--mode", "closed", "--drift-damping", "0.5"],
                          "drift damping is for open mode"),
                         ([str(tmp_path / "none"), "--out", str(bad)], "no such file or folder"),
                         ([str(tmp_path / "wide.npy"), "--out", str(bad)], "the latents are 6x16 W+, the codec of"),
                         ([str(lat), "--out", str(tmp_path / "no" / "x.safetensors")], "does not exist")):
        assert main(["fit-context-tables", str(tiny_codec_path), *args]) == 2
        _error_line(capsys, needle)
    assert main(["fit-context-tables", str(lat / "0.npy"), str(lat), "--out", str(bad)]) == 2
    _error_line(capsys, "0.npy")
    assert not bad.exists()
