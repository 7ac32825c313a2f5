"""The encoder's scalar quantizer of latent differences: rounding, or a dead zone (an encoder choice, any bitstream).

    v = sign(x) · ⌊|x| + f⌋          (x in units of the step; f the rounding offset, 0 ≤ f ≤ 0.5)

``f = 0.5`` rounds to nearest (``np.rint``, ties to even: the integers every earlier build sent). A smaller ``f``
widens the zero bin to ``|x| < 1 − f`` and moves every other bin's threshold by ``0.5 − f`` towards larger values:
the dead-zone quantizer with rounding offset of video encoders (the H.264/AVC reference encoder uses f = 1/6 for inter
blocks and 1/3 for intra; Sullivan, "Efficient scalar quantization of exponential and Laplacian random variables",
IEEE Trans. IT 42(5), 1996, shows the dead zone is near rate–distortion optimal for such peaked sources). A latent
difference is peaked at 0, and in closed loop a value left in the dead zone is not lost: the state keeps the error
(at most ``1 − f`` steps) and the next frame's difference carries it once it grows past the threshold. The decoder
never knows ``f``; only the integers are coded. Measured in ``benchmarks/inter_context.py``.
"""

from __future__ import annotations

import numpy as np

ROUNDING_OFFSET = 0.5  # the default: round to nearest


def quantize(x: np.ndarray, offset: float = ROUNDING_OFFSET) -> np.ndarray:
    """(…) int64: ``x`` (…) float, in units of the step, quantized with rounding offset ``offset`` (0 … 0.5; 0.5:
    ``np.rint``, round half to even)."""
    if offset == ROUNDING_OFFSET:
        return np.rint(x).astype(np.int64)
    return (np.sign(x) * np.floor(np.abs(x) + offset)).astype(np.int64)
