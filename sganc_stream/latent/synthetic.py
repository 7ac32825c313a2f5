"""Synthetic W+-like sequences for tests, demos and the default codec before a face model exists.

``smooth``: a per-clip identity (a random W+ frame) plus slow motion (a few random sinusoids per
dimension, stronger in coarse rows). ``walk``: the identity plus a Gaussian random walk. Values have
roughly unit spread, like pSp codes around their average.
"""

from __future__ import annotations

import numpy as np


def synthetic_latents(kind: str, frames: int, rows: int = 18, width: int = 512, seed: int = 0) -> np.ndarray:
    """(frames, rows, width) float32 sequence of the given kind (``smooth`` or ``walk``)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((1, rows, width))
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    if kind == "smooth":
        amp = rng.uniform(0.05, 0.3, (3, rows, width)) * np.linspace(1.0, 0.3, rows)[None, :, None]
        freq = rng.uniform(0.01, 0.08, (3, rows, width))
        phase = rng.uniform(0, 2 * np.pi, (3, rows, width))
        motion = sum(amp[k] * np.sin(2 * np.pi * freq[k] * t + phase[k]) for k in range(3))
    elif kind == "walk":
        steps = rng.standard_normal((frames, rows, width)) * 0.03
        steps[0] = 0
        motion = np.cumsum(steps, axis=0)
    else:
        raise ValueError(f"unknown synthetic kind {kind!r} (smooth or walk)")
    return (base + motion).astype(np.float32)
