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
