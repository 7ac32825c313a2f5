from fractions import Fraction

import numpy as np
import pytest

from sganc_stream.entropy.tables import TOTAL, CodingTable, histogram_freqs, quantize_pmf, quantize_pmf_exact


def test_quantized_pmf_is_valid_and_close():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(40) * 0.3, size=50)
    f = quantize_pmf(p)
    assert f.dtype == np.int32 and (f >= 1).all() and (f.sum(1) == TOTAL).all()
    assert np.abs(f / TOTAL - p).max() < 41 / TOTAL


def test_exact_and_float_rules_agree_on_dyadic_probabilities():
    p = [Fraction(1, 2), Fraction(1, 4), Fraction(1, 8), Fraction(1, 8)]
    assert quantize_pmf_exact(p) == quantize_pmf(np.array([float(x) for x in p])).tolist()
    assert sum(quantize_pmf_exact(p)) == TOTAL


def test_symbols_and_escapes():
    t = CodingTable(np.array([-2, 0]), quantize_pmf(np.full((2, 5), 0.2)))
    sym, esc = t.symbols(np.array([-2, 4]))
    assert sym.tolist() == [0, 4] and esc.tolist() == [False, True]
    expected = 2 * 16 - np.log2(t.freqs[0, 0]) - np.log2(t.freqs[1, 4]) + 32
    assert t.ideal_bits(np.array([-2, 4])) == pytest.approx(expected, rel=1e-12)


def test_invalid_table_rejected():
    with pytest.raises(ValueError):
        CodingTable(np.array([0]), np.array([[TOTAL, 0]], dtype=np.int32))


def test_histogram_freqs_is_the_exact_add_one_rule():
    values = np.array([0, 0, 0, 1, -1, 5, 9, -7])  # 5, 9 and -7 fall outside -1 … 1: escapes
    f = histogram_freqs(values, offset=-1, n_data=3)
    counts = [1 + 1, 3 + 1, 1 + 1, 3 + 1]  # add-one counts of -1, 0, 1 and the escape
    assert f == quantize_pmf_exact([Fraction(k, sum(counts)) for k in counts])
    assert sum(f) == TOTAL and min(f) >= 1 and f[1] == f[3] == max(f)
    assert histogram_freqs(values[::-1], -1, 3) == f  # a histogram: order does not matter
    empty = histogram_freqs(np.empty(0, np.int64), 0, 3)
    assert sum(empty) == TOTAL and max(empty) - min(empty) <= 4  # no data: nearly uniform
