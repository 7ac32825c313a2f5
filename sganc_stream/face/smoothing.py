"""Temporal smoothing of the crop quad: landmark noise must not become crop jitter (and latent motion, and bits).

A One-Euro filter (Casiez et al., CHI 2012) on the quad's parameters: a low-pass whose cutoff rises with speed, so a
still face is held steady while a moving one is followed with little lag. Position is filtered in units of the face's
half-size (so the same settings suit any resolution), size as its logarithm, angle in radians.
"""

from __future__ import annotations

import math

import numpy as np

from sganc_stream.face.ffhq_quad import Quad

MIN_CUTOFF = 0.4  # Hz: cutoff when still (jitter suppression)
BETA = 4.0  # cutoff gain per (half-size or radian) per second of motion (lag reduction)
D_CUTOFF = 1.0  # Hz: cutoff for the speed estimate


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a vector; ``__call__(x, dt)`` returns the filtered vector."""

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @property
    def primed(self) -> bool:
        """Whether a first value has been seen (the next call filters rather than starts)."""
        return self._x is not None

    def reset(self) -> None:
        self._x = self._dx = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        if self._x is None or self._dx is None or dt <= 0:
            self._x, self._dx = np.array(x, dtype=np.float64), np.zeros(len(x))
            return self._x.copy()
        dx = (x - self._x) / dt
        self._dx += _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x += _alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


class QuadSmoother:
    """One-Euro filtering of quads; ``reset()`` when the track is lost so a new face does not slide in."""

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF) -> None:
        self._filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self._unit = 1.0
        self._angle = 0.0

    def reset(self) -> None:
        self._filter.reset()

    def __call__(self, quad: Quad, dt: float) -> Quad:
        if not self._filter.primed:
            self._unit, self._angle = quad.half, quad.angle
        # unwrap the angle next to the previous one so a turn through ±pi is not a full spin
        angle = self._angle + math.remainder(quad.angle - self._angle, 2.0 * math.pi)
        self._angle = angle
        params = np.array([quad.cx / self._unit, quad.cy / self._unit, math.log(quad.half), angle])
        cx, cy, log_half, angle = self._filter(params, dt)
        return Quad(cx * self._unit, cy * self._unit, math.exp(log_half), angle)
