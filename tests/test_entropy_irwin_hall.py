from fractions import Fraction

import numpy as np
import pytest

from sganc_stream.entropy.irwin_hall import centred_cdf, irwin_hall_n, residual_pmf, residual_table
from sganc_stream.entropy.tables import TOTAL


def test_n_follows_lemma_1():
    assert [irwin_hall_n(g) for g in (1, 2, 10)] == [3, 4, 12]


def test_exact_values_for_three_terms():
    # Sum of three U(-1/2, 1/2): P(round = 0) = F(1/2) - F(-1/2) = 2/3, P(±1) = 1/6.
    offset, probs = residual_pmf(1)
    pmf = dict(zip(range(offset, offset + len(probs) - 1), probs[:-1]))
    assert pmf[0] == Fraction(2, 3) and pmf[1] == pmf[-1] == Fraction(1, 6)
    assert sum(probs) == 1
    assert centred_cdf(Fraction(0), 5) == Fraction(1, 2)


@pytest.mark.parametrize("g", [1, 2, 5, 10, 40])
def test_table_matches_monte_carlo(g):
    rng = np.random.default_rng(g)
    n = irwin_hall_n(g)
    samples = np.rint(rng.uniform(-0.5, 0.5, (200_000, n)).sum(1)).astype(int)
    table = residual_table(g)
    offset = int(table.offsets[0])
    p_table = table.freqs[0, :-1] / TOTAL
    counts = np.bincount(samples - offset, minlength=len(p_table))[: len(p_table)] / len(samples)
    assert np.abs(counts - p_table).max() < 0.005
    # cross-entropy of the samples under the table is close to their entropy
    ce = -np.mean(np.log2(table.freqs[0, samples - offset] / TOTAL))
    ent = -np.sum(counts[counts > 0] * np.log2(counts[counts > 0]))
    assert ce - ent < 0.01


def test_g_out_of_range():
    with pytest.raises(ValueError):
        residual_table(0)
    with pytest.raises(ValueError):
        residual_table(256)
