import struct
import zlib

import constriction
import numpy as np
import pytest

from sganc_stream.assets import default_face_model, default_latent_codec
from sganc_stream.entropy.irwin_hall import residual_table
from sganc_stream.entropy.rans import _FAMILY, _interval_rows, check_value, decode_parts, encode_parts
from sganc_stream.entropy.tables import MAX_SYMBOLS, TOTAL, CodingTable, quantize_pmf
from sganc_stream.errors import BitstreamError
from sganc_stream.latent.model import load_latent_codec


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


def test_check_value_is_the_low_16_bits_of_the_crc32_of_the_values() -> None:
    a, b = np.array([1, -2, 2**31 - 1]), np.array([-(2**31)])
    assert check_value([a, b]) == zlib.crc32(struct.pack("<4i", 1, -2, 2**31 - 1, -(2**31))) & 0xFFFF


def test_altered_escape_values_are_caught_by_the_check_value() -> None:
    """Escapes are uniform 16-bit symbols decoded last: any bits there decode to *some* value and the coder still
    ends empty, so only the check value can tell (bitstream v2)."""
    rng = np.random.default_rng(4)
    t = _table(rng, 300)
    v = _sample(rng, t)
    v[[5, 77, 200]] = [10**6, -12345, 4000]
    payload = encode_parts([(v, t)])
    assert np.array_equal(decode_parts(payload, [(t, 300)])[0], v)
    for bit in range(8 * 12):  # the first three words: the bottom of the stack (check value and escapes)
        bad = bytearray(payload)
        bad[bit // 8] ^= 1 << bit % 8
        with pytest.raises(BitstreamError, match="corrupted payload"):
            decode_parts(bytes(bad), [(t, 300)])
    with pytest.raises(BitstreamError, match="does not end"):  # a v2 payload read as v1: the check value is left over
        decode_parts(payload, [(t, 300)], check=False)


def _full_rows_payload(sym: np.ndarray, t: CodingTable) -> bytes:
    """``sym`` coded as the coder did before its per-table cache: constriction's model rebuilt from every full row (the
    categorical family, or a shared table's concrete model)."""
    coder = constriction.stream.stack.AnsCoder()
    if t.shared:
        coder.encode_reverse(sym, constriction.stream.model.Categorical(t.probs[0], perfect=False))
    else:
        coder.encode_reverse(sym, constriction.stream.model.Categorical(perfect=False), t.probs)
    return coder.get_compressed().tobytes()


def _cached_payload(sym: np.ndarray, t: CodingTable) -> bytes:
    """``sym`` coded from the table's cached cdf, as encode_parts codes it."""
    k, rows = _interval_rows(t, sym)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(k, _FAMILY, rows)
    return coder.get_compressed().tobytes()


def _tables_to_check() -> list[CodingTable]:
    rng = np.random.default_rng(5)
    out = [_table(rng, 64, n) for n in (2, 3, 24, 149, MAX_SYMBOLS)]
    lop = np.ones((3, MAX_SYMBOLS), dtype=np.int32)  # nearly all mass on one symbol, every other frequency 1
    lop[np.arange(3), [0, 100, MAX_SYMBOLS - 1]] += TOTAL - MAX_SYMBOLS
    two = np.array([[1, TOTAL - 1], [TOTAL - 1, 1]], np.int32)
    out += [CodingTable(np.zeros(3, np.int64), lop), CodingTable(np.zeros(2, np.int64), two), residual_table(1),
            residual_table(10)]
    for path in (default_latent_codec(), default_face_model()):
        m = load_latent_codec(path)
        out += [t for kind in m.tables.values() for t in kind] + list(m.empirical_residuals.get(10, []))
    return out


def test_cached_intervals_give_the_full_rows_bytes_for_every_symbol_of_every_table() -> None:
    """The coder's per-table cdf (built once) codes every symbol of every table, the shipped models' included, with
    exactly the interval constriction builds from the full row on every call: the same bytes, symbol by symbol."""
    rng = np.random.default_rng(6)
    for t in _tables_to_check():
        c = t.freqs.shape[0] if not t.shared else 257
        for s in range(t.num_symbols):
            sym = np.full(c, s, dtype=np.int32)
            assert _cached_payload(sym, t) == _full_rows_payload(sym, t), (t.freqs.shape, s)
        sym = rng.integers(0, t.num_symbols, c).astype(np.int32)
        assert _cached_payload(sym, t) == _full_rows_payload(sym, t)


def test_coder_cdf_is_built_once_and_shared_by_selected_rows() -> None:
    t = _table(np.random.default_rng(7), 40, 30)
    assert t.cdf is t.cdf  # cached on the table
    assert t.cdf.shape == (40, 31) and (np.diff(t.cdf, axis=1) >= 1).all() and (t.cdf[:, -1] == 1 << 24).all()
    rows = np.random.default_rng(8).integers(0, 40, 100)
    sel = t.select_rows(rows)
    sym = np.random.default_rng(9).integers(0, 30, 100)
    assert np.array_equal(np.stack(sel.intervals(sym)), np.stack((t.cdf[rows, sym], t.cdf[rows, sym + 1])))
    assert "cdf" not in sel.__dict__  # gathered from the source table's cdf, not a copy built per frame
    sym32 = sym.astype(np.int32)
    assert np.array_equal(sel.cdf, t.cdf[rows]) and _cached_payload(sym32, sel) == _full_rows_payload(sym32, sel)


def test_peek_choice_reads_the_step_choice_alone_and_refuses_broken_payloads() -> None:
    from sganc_stream.entropy.rans import peek_choice

    table = _table(np.random.default_rng(5), c=3, length=8)
    for j in range(4):
        payload = encode_parts([(np.array([-10, -8, -12]), table)], (j, 4))
        assert peek_choice(payload, 4) == j
    for bad in (b"", b"abc"):
        with pytest.raises(BitstreamError):
            peek_choice(bad, 4)
