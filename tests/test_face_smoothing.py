"""One-Euro quad smoothing: holds still input, suppresses noise, follows motion, survives angle wrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sganc_stream.face.ffhq_quad import Quad
from sganc_stream.face.smoothing import OneEuroFilter, QuadSmoother


def test_constant_input_passes_unchanged() -> None:
    smoother = QuadSmoother()
    quad = Quad(100.0, 80.0, 50.0, 0.1)
    for _ in range(10):
        out = smoother(quad, 0.04)
    assert (out.cx, out.cy, out.half, out.angle) == pytest.approx((100.0, 80.0, 50.0, 0.1))


def test_noise_is_suppressed_and_motion_followed() -> None:
    rng = np.random.default_rng(0)
    noisy = 200.0 + rng.normal(0, 1.0, 200)
    smoother = QuadSmoother()
    out = np.array([smoother(Quad(x, 150.0, 100.0, 0.0), 0.04).cx for x in noisy])
    assert np.abs(np.diff(out[50:])).mean() < 0.2 * np.abs(np.diff(noisy[50:])).mean()
    # then a steady pan of 2 half-sizes per second: the filter keeps up within a few pixels
    smoother.reset()
    t = np.arange(100) * 0.04
    pan = 100.0 + 200.0 * t
    out = np.array([smoother(Quad(x, 150.0, 100.0, 0.0), 0.04).cx for x in pan])
    assert np.abs(out[25:] - pan[25:]).max() < 5.0


def test_angle_wrap_does_not_spin() -> None:
    smoother = QuadSmoother()
    angles = [math.pi - 0.02, -math.pi + 0.02, math.pi - 0.01, -math.pi + 0.01]
    outs = [smoother(Quad(0.0, 0.0, 10.0, a), 0.04).angle for a in angles]
    assert all(abs(math.remainder(o - math.pi, 2 * math.pi)) < 0.05 for o in outs)


def test_reset_restarts_at_the_next_value() -> None:
    f = OneEuroFilter()
    f(np.array([0.0]), 0.04)
    f.reset()
    assert not f.primed
    assert f(np.array([5.0]), 0.04)[0] == 5.0
