"""Pure helpers of the bitrate-versus-g benchmark (benchmarks/rd.py, benchmarks/baselines.py): wire overhead,
operational curves, headline interpolation, naive latent coding, residual bit counts. The benchmark run itself
is not a test (CI runs ``benchmarks/bitrate_vs_g.py --quick`` as a smoke run)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from baselines import naive_code  # noqa: E402
from rd import (RTP_OVERHEAD, empirical_bits, entropy_bits, envelope, headline_ratio, rate_at_quality,  # noqa: E402
                rtp_wire_bytes, smallest_int_dtype)


def test_rtp_wire_bytes_per_rtp_packet():
    assert rtp_wire_bytes(100) == 100 + RTP_OVERHEAD
    assert rtp_wire_bytes(2000) == 2000 + 2 * RTP_OVERHEAD


def test_envelope_keeps_only_improving_points():
    pts = [(10, 0.5), (5, 0.6), (20, 0.55), (40, 0.3), (40, 0.2), (80, float("nan"))]
    assert envelope(pts) == [(5, 0.6), (10, 0.5), (40, 0.2)]
    assert envelope([(1, 20.0), (2, 25.0), (3, 24.0)], lower_is_better=False) == [(1, 20.0), (2, 25.0)]


def test_rate_at_quality_interpolates_log_rate():
    pts = [(10, 0.4), (40, 0.2)]
    rate, status = rate_at_quality(pts, 0.3)
    assert status == "ok" and rate == pytest.approx(20.0)  # geometric midpoint
    assert rate_at_quality(pts, 0.4)[0] == pytest.approx(10.0)
    assert rate_at_quality(pts, 0.2)[0] == pytest.approx(40.0)


def test_rate_at_quality_never_extrapolates():
    pts = [(10, 0.4), (40, 0.2)]
    rate, status = rate_at_quality(pts, 0.1)
    assert rate is None and status.startswith("better")
    rate, status = rate_at_quality(pts, 0.5)
    assert rate is None and status.startswith("worse")
    assert rate_at_quality([], 0.3) == (None, "no points")


def test_headline_ratio_and_bounds():
    x265 = [(10, 0.4), (40, 0.2)]
    h = headline_ratio((5.0, 0.3), x265)
    assert h["ratio"] == pytest.approx(4.0) and h["ratio_bound"] is None
    h = headline_ratio((5.0, 0.5), x265)
    assert h["ratio"] is None and h["ratio_bound"] == "<= 2"
    h = headline_ratio((5.0, 0.1), x265)
    assert h["ratio"] is None and h["ratio_bound"] == ">= 8"


def test_naive_code_rounds_to_step_and_measures_mse():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 16)).astype(np.float32)
    r = naive_code(w, 0.1, "zlib")
    assert r["latent_mse"] == pytest.approx(0.1**2 / 12, rel=0.3)
    assert r["dtype"] == "int8"
    coarse = naive_code(w, 1.0, "bzip2")
    assert coarse["latent_mse"] > r["latent_mse"] and coarse["bytes_per_frame"] < r["bytes_per_frame"] + 50


def test_smallest_int_dtype():
    assert smallest_int_dtype(np.array([0, -100, 100])).name == "int8"
    assert smallest_int_dtype(np.array([0, 1000])).name == "int16"
    assert smallest_int_dtype(np.array([70000])).name == "int32"


def test_empirical_and_entropy_bits():
    train = np.array([0] * 90 + [1] * 5 + [-1] * 5)
    sym = np.array([0, 0, 1])
    p0, p1 = 91 / 106, 6 / 106  # add-one over 6 cells (support -2..2 and the escape): 100 + 6
    expected = -2 * math.log2(p0) - math.log2(p1)
    assert empirical_bits(sym, train, (-2, 2)) == pytest.approx(expected)
    esc = empirical_bits(np.array([7]), train, (-2, 2))
    assert esc == pytest.approx(-math.log2(1 / 106) + 32)
    assert entropy_bits(np.array([3, 3, 3])) == 0.0
    assert entropy_bits(np.array([0, 1])) == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------------
# The systems' one interface (bitrate_systems.py) and the breakdown tables (bitrate_report.py)


def _clip(latents):
    from bitrate_systems import Clip

    n = len(latents)
    return Clip("test/clip", "someone", 25.0, np.zeros((n, 8, 8, 3), np.uint8), latents.astype(np.float32), [])


def test_sganc_system_codes_a_file_and_breaks_its_bits_down(tiny_codec):
    from types import SimpleNamespace

    from bitrate_systems import HEADLINE_G, Sganc
    from sganc_stream.bitstream.container import decode_container
    from sganc_stream.latent.codec import StreamParams
    from sganc_stream.latent.sequence import decode_sequence
    from sganc_stream.latent.synthetic import synthetic_latents

    from conftest import TINY_ROWS, TINY_WIDTH

    clip = _clip(synthetic_latents("walk", 23, TINY_ROWS, TINY_WIDTH, seed=3))
    system = Sganc(SimpleNamespace(codec=tiny_codec, model_id=tiny_codec.model_id),  # type: ignore[arg-type]
                   [StreamParams("open", HEADLINE_G, 1), StreamParams("closed", 0, 2)])
    points = system.points()
    assert [p.key()["g"] for p in points] == [str(HEADLINE_G), None] and points[1].step == tiny_codec.steps[2]
    for point in points:
        c = system.code(clip, point)
        container = decode_container(c.data)
        assert c.file_bytes == len(c.data) and c.record.tolist() == container.record_bytes
        assert c.payload.tolist() == [len(p.payload) for p in container.packets]
        assert (c.wire > c.record).all()
        assert np.array_equal(decode_sequence(tiny_codec, container), c.wplus)  # what a decoder outputs
        b = c.breakdown.to_dict()
        assert b["total_bits"] == 8 * c.file_bytes and b["payload_bits"] == 8 * c.payload.sum()
        assert sum(r["bits"] for r in b["by_row"]) == 8 * c.payload.sum()
        assert b["framing_bits"] == 8 * (c.record.sum() - c.payload.sum())
    assert system.keeps(points[0]) and system.file_name(clip, points[0], c).endswith(f"open_g{HEADLINE_G}_step{tiny_codec.steps[1]:g}.sgnc")
    # the commands' default residual table (auto): the model's empirical table for g = 10, Irwin–Hall without residuals
    assert HEADLINE_G in tiny_codec.empirical_residuals
    assert [decode_container(system.code(clip, p).data).header.residual for p in points] == ["empirical", "irwin_hall"]
    paper = Sganc(system.model, system.configs, "irwin_hall")
    assert decode_container(paper.code(clip, points[0]).data).header.residual == "irwin_hall"


def test_naive_system_matches_naive_code():
    from bitrate_systems import NaiveLatents

    rng = np.random.default_rng(1)
    clip = _clip(rng.normal(size=(5, 3, 16)))
    system = NaiveLatents((0.5, 0.1))
    points = system.points()
    assert [(p.mode, p.step) for p in points] == [("zlib", 0.5), ("bzip2", 0.5), ("zlib", 0.1), ("bzip2", 0.1)]
    assert not system.scored and not system.keeps(points[0])
    for p in points:
        c = system.code(clip, p)
        ref = naive_code(clip.wplus, p.step, p.mode)
        assert c.payload.mean() == pytest.approx(ref["bytes_per_frame"]) and c.file_bytes == ref["clip_bytes"]
        assert np.mean((c.wplus - clip.wplus) ** 2) == pytest.approx(ref["latent_mse"])


def test_breakdown_tables_come_from_the_result():
    from bitrate_report import breakdown_markdown

    by_part = {p: {"bits": b, "share": b / 1000, "ideal_bits": b} for p, b in
               (("intra", 300), ("new_face", 0), ("difference", 400), ("residual", 200))}
    entry = {"system": "sganc", "mode": "open", "g": "10", "step": 1.0, "target_kbps": None, "total_bits": 1000,
             "frames": 10, "bits_per_frame": 100.0, "kbps": 2.5, "container": {"header_bits": 40, "end_bits": 20, "share": 0.06},
             "payload_bits": 900, "framing_bits": 40, "by_part": by_part, "transport": {"bits": 500, "kbps": 1.25},
             "by_packet_type": {"intra": {"packets": 1, "bits_per_packet": 310.0, "share": 0.31}},
             "by_group": [{"rows": [0, 2], "bits": 900, "share": 0.9, "by_part": {"difference": 400, "residual": 200}}],
             "by_row": [{"row": 0, "bits": 500, "share": 0.5, "by_part": {"intra": 150, "difference": 250, "residual": 100}},
                        {"row": 1, "bits": 400, "share": 0.4, "by_part": {"intra": 150, "difference": 150, "residual": 100}}]}
    text = "\n".join(breakdown_markdown({"breakdown": [entry, {**entry, "g": "2"}]}))
    assert "| 1 | 100 (2.5 kbps) | 30 (30.0 %) | 0 (0.0 %) | 40 (40.0 %) | 20 (20.0 %) | 4 (4.0 %) | 6 (6.0 %) | 50 (1.2 kbps) |" in text
    assert "| 0 | 50 | 50.0 % | 15 | 25 | 10 |" in text
    assert text.count("| 1 | intra |") == 1  # g = 2 is not a headline row
    assert breakdown_markdown({"breakdown": []}) == [] and breakdown_markdown({}) == []


@pytest.mark.parametrize("residual,damping,offset", [("auto", 0.0, 0.5), ("irwin_hall", 0.0, 0.5), ("auto", 0.5, 1 / 6)])
def test_pipeline_self_check_codes_as_the_latent_grid(residual: str, damping: float, offset: float) -> None:
    """The benchmark exits 1 unless FrameEncoder's stream (load_clip) equals the latent grid's re-coding of the same
    point: both must resolve ``--residual-table`` and take the encoder options alike (CI failed when only the grid
    resolved ``auto``)."""
    from bitrate_systems import HEADLINE_G, EncoderOptions, Sganc, load_clip, sganc_params
    from face_data import CLIPS, STEADY_CLIP, shared_path
    from pipeline_data import tiny_bundle
    from sganc_stream.pipeline import load_face_model

    model = load_face_model(tiny_bundle())
    mid = len(model.codec.steps) // 2
    assert HEADLINE_G in model.codec.empirical_residuals  # so auto and irwin_hall are different streams
    encoder = EncoderOptions("factorized", damping, offset)
    clip = load_clip(model, shared_path(CLIPS, STEADY_CLIP), 12, "steady", "someone", {}, residual, encoder)
    system = Sganc(model, [sganc_params(model, "open", HEADLINE_G, mid, residual, encoder)], residual, encoder)
    point = system.points()[0]
    assert (point.mode, point.g, point.step_index) == ("open", HEADLINE_G, mid)
    assert system.code(clip, point).notes["payloads"] == clip.pipeline_payloads


def test_encoder_options_reach_every_mode_that_has_them(tiny_codec):
    """--inter-context/--drift-damping/--rounding-offset apply where a mode has inter differences (open: all three;
    closed: no damping; intra: none), and temporal context needs the model's tables (InputError otherwise)."""
    import dataclasses
    from types import SimpleNamespace

    from bitrate_systems import EncoderOptions, sganc_params
    from sganc_stream.errors import InputError
    from sganc_stream.latent.quantize import ROUNDING_OFFSET

    model = SimpleNamespace(codec=tiny_codec)
    tuned = EncoderOptions("factorized", 0.5, 1 / 6)
    assert tuned.label() == "factorized context, drift damping 0.5, rounding offset 0.167"
    assert EncoderOptions("factorized", 0.0, ROUNDING_OFFSET).label() == \
        "factorized context, drift damping 0, rounding offset 0.5"
    # auto (the commands' default) is what the model's tables were fitted for, resolved as the commands resolve it
    fitted = dataclasses.replace(tiny_codec, tables_encoder={"drift_damping": 0.5, "rounding_offset": 1 / 6})
    assert EncoderOptions().resolved(fitted) == EncoderOptions("factorized", 0.5, 1 / 6)  # no context tables
    assert EncoderOptions().resolved(tiny_codec) == EncoderOptions("factorized", 0.0, ROUNDING_OFFSET)
    assert sganc_params(SimpleNamespace(codec=fitted), "closed", 0, 1).damping == 0.0  # type: ignore[arg-type]
    open_ = sganc_params(model, "open", 10, 1, "auto", tuned)  # type: ignore[arg-type]
    assert (open_.damping, open_.rounding_offset, open_.residual) == (0.5, 1 / 6, "empirical")
    closed = sganc_params(model, "closed", 0, 1, "auto", tuned)  # type: ignore[arg-type]
    assert (closed.damping, closed.rounding_offset, closed.residual) == (0.0, 1 / 6, "irwin_hall")
    intra = sganc_params(model, "intra", 0, 1, "auto", tuned)  # type: ignore[arg-type]
    assert (intra.damping, intra.rounding_offset) == (0.0, ROUNDING_OFFSET)
    bare = SimpleNamespace(codec=dataclasses.replace(tiny_codec, context_tables=[]))
    with pytest.raises(InputError, match="temporal"):
        sganc_params(bare, "open", 10, 1, "auto", EncoderOptions("temporal"))  # type: ignore[arg-type]
