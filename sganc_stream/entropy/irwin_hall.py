"""Residual tables from the discretized Irwin-Hall law (SGANC, Lemma 1), in exact rational arithmetic.

With open-loop inter coding, the drift between the encoder's proxy latent and the decoder's integer
state after g frames is a sum of independent rounding errors, each uniform on [-1/2, 1/2] in units of
the step. Its law is Irwin-Hall with n = 3 + (g - 1) terms (centred); the residual symbol is that error
rounded. Probabilities are computed as Fractions, so every implementation derives the same integers.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb, factorial

import numpy as np

from sganc_stream.entropy.tables import MAX_SYMBOLS, CodingTable, quantize_pmf_exact

MAX_G = 255


def irwin_hall_n(g: int) -> int:
    """Number of uniform terms for residual period ``g`` (the paper's n = 3 + (g - 1))."""
    return 3 + (g - 1)


def centred_cdf(x: Fraction, n: int) -> Fraction:
    """CDF of the sum of n independent U(-1/2, 1/2) at x, exactly."""
    u = x + Fraction(n, 2)  # shift to the standard Irwin-Hall support [0, n]
    if u <= 0:
        return Fraction(0)
    if u >= n:
        return Fraction(1)
    total = sum((-1) ** k * comb(n, k) * (u - k) ** n for k in range(int(u) + 1))
    return total / factorial(n)


def residual_support(g: int) -> tuple[int, int]:
    """(offset, number of data symbols) of the residual tables for period g: the values −h … h,
    h = min(⌊(n+1)/2⌋, 127). Empirical residual tables (:func:`~sganc_stream.entropy.tables.histogram_freqs`) use the
    same support."""
    if not 1 <= g <= MAX_G:
        raise ValueError(f"residual period g must be in 1..{MAX_G}")
    half = min((irwin_hall_n(g) + 1) // 2, (MAX_SYMBOLS - 2) // 2)
    return -half, 2 * half + 1


@lru_cache(maxsize=64)
def residual_pmf(g: int) -> tuple[int, tuple[Fraction, ...]]:
    """(offset, exact probabilities) of the rounded residual for period g; last entry is the escape mass."""
    offset, n_data = residual_support(g)
    n = irwin_hall_n(g)
    values = range(offset, offset + n_data)
    probs = [centred_cdf(Fraction(2 * k + 1, 2), n) - centred_cdf(Fraction(2 * k - 1, 2), n) for k in values]
    return offset, (*probs, 1 - sum(probs))


@lru_cache(maxsize=64)
def residual_table(g: int) -> CodingTable:
    """The frozen integer table the coder uses for residuals of period g (one row shared by all channels)."""
    offset, probs = residual_pmf(g)
    freqs = np.array([quantize_pmf_exact(list(probs))], dtype=np.int32)
    return CodingTable(offsets=np.array([offset], dtype=np.int64), freqs=freqs, shared=True)
