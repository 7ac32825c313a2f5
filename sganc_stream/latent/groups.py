"""Stage groups of W+ rows and their distortion weights.

StyleGAN2's W+ rows drive coarse (pose, shape), middle (expression, features) and fine (colour, texture)
layers. Each stage group gets its own flow, entropy model and distortion weight. For 18 rows the groups
are rows 0-6, 7-12 and 13-17; other depths split at the same fractions (7/18 and 13/18).
"""

from __future__ import annotations

import numpy as np


def stage_groups(rows: int, kind: str = "stage") -> list[tuple[int, int]]:
    """Half-open row ranges: three stage groups, or one group of all rows for ``kind='single'``."""
    if kind == "single" or rows < 3:
        return [(0, rows)]
    if kind != "stage":
        raise ValueError(f"unknown group kind {kind!r} (stage or single)")
    a = max(1, round(rows * 7 / 18))
    b = max(a + 1, min(rows - 1, round(rows * 13 / 18)))
    return [(0, a), (a, b), (b, rows)]


def row_weights(rows: int, groups: list[tuple[int, int]]) -> np.ndarray:
    """Relative distortion weight per row: 1 over the first group, then linear down to 1/100 at the last row."""
    w = np.ones(rows, dtype=np.float64)
    first_end = groups[0][1]
    if first_end < rows:
        span = rows - first_end
        w[first_end:] = 1.0 - (1.0 - 0.01) * np.arange(1, span + 1) / span
    return w
