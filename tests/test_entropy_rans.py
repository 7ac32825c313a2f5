import numpy as np
import pytest

from sganc_stream.entropy.irwin_hall import residual_table
from sganc_stream.entropy.rans import decode_parts, encode_parts
from sganc_stream.entropy.tables import CodingTable, quantize_pmf
from sganc_stream.errors import BitstreamError


def _table(rng: np.random.Generator, c: int = 9216, length: int = 24) -> CodingTable:
    p = np.exp(-0.5 * ((np.arange(length) - length / 2) / rng.uniform(1, 4, (c, 1))) ** 2)
    return CodingTable(rng.integers(-15, -5, c), quantize_pmf(p))


def _sample(rng: np.random.Generator, t: CodingTable) -> np.ndarray:
    cdf = np.cumsum(t.freqs[:, :-1], 1) / t.freqs[:, :-1].sum(1, keepdims=True)
    return (np.argmax(cdf > rng.random((len(cdf), 1)), axis=1) + t.offsets).astype(np.int64)


def test_round_trip_with_escapes_and_residuals():
    rng = np.random.default_rng(0)
    t = _table(rng)
    v = _sample(rng, t)
    v[[3, 100]] = [10**6, -(2**31)]
    r = rng.integers(-2, 3, t.freqs.shape[0])
    r[7] = 99
    payload = encode_parts([(v, t), (r, residual_table(4))])
    a, b = decode_parts(payload, [(t, len(v)), (residual_table(4), len(r))])
    assert np.array_equal(a, v) and np.array_equal(b, r)


def test_actual_bits_within_one_percent_of_ideal():
    rng = np.random.default_rng(1)
    t = _table(rng)
    v = _sample(rng, t)
    payload = encode_parts([(v, t)])
    assert 8 * len(payload) <= 1.01 * t.ideal_bits(v)


def test_deterministic_bytes():
    rng = np.random.default_rng(2)
    t = _table(rng, 100)
    v = _sample(rng, t)
    assert encode_parts([(v, t)]) == encode_parts([(v, t)])


def test_corruption_detected():
    rng = np.random.default_rng(3)
    t = _table(rng, 2000)
    payload = bytearray(encode_parts([(_sample(rng, t), t)]))
    payload[len(payload) // 2] ^= 0x5A
    with pytest.raises(BitstreamError):
        decode_parts(bytes(payload), [(t, 2000)])
    with pytest.raises(BitstreamError, match="32-bit"):
        decode_parts(b"abc", [(t, 2000)])


def test_out_of_int32_range_rejected():
    t = CodingTable(np.zeros(1, np.int64), quantize_pmf(np.ones((1, 4))))
    with pytest.raises(ValueError):
        encode_parts([(np.array([2**40]), t)])
