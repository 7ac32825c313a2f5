"""Frozen integer frequency tables: the only thing the rANS coder reads.

A table codes one integer per channel. Channel ``c`` maps value ``v`` to symbol ``v - offset[c]`` when
``0 <= v - offset[c] < L - 1``; every other value codes the escape symbol ``L - 1`` followed by the value
itself (see :mod:`sganc_stream.entropy.rans`). Frequencies are integers summing to ``2**PRECISION`` with
every entry >= 1, so any value stays codable and every machine derives the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Sequence

import numpy as np

PRECISION = 16
TOTAL = 1 << PRECISION
CODER_PRECISION = 24  # the precision of constriction's AnsCoder models (DefaultAnsCoder: 32-bit words, 24-bit models)
MAX_SYMBOLS = 256  # data symbols + escape; wider supports are truncated and their tails escape


def quantize_pmf(p: np.ndarray) -> np.ndarray:
    """Integer frequencies for probabilities ``p`` (..., L): ``1 + floor(p * (TOTAL - L))``, remainder to the argmax.

    The same rule is applied to exact rationals by :func:`quantize_pmf_exact`; the specification
    (bitstream_spec/SPEC.md) states it so an independent decoder can rebuild residual tables.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    p = p / p.sum(axis=-1, keepdims=True)
    n = p.shape[-1]
    f = 1 + np.floor(p * (TOTAL - n)).astype(np.int64)
    rem = TOTAL - f.sum(axis=-1)
    idx = np.argmax(p, axis=-1)
    np.put_along_axis(f, idx[..., None], np.take_along_axis(f, idx[..., None], -1) + rem[..., None], -1)
    return f.astype(np.int32)


def quantize_pmf_exact(p: Sequence[Fraction]) -> list[int]:
    """:func:`quantize_pmf` on exact rationals that sum to one (no floating point anywhere)."""
    n = len(p)
    f = [1 + (pi * (TOTAL - n)).__floor__() for pi in p]
    best = max(range(n), key=lambda i: (p[i], -i))
    f[best] += TOTAL - sum(f)
    return f


def uniform_freqs(n: int) -> list[int]:
    """Integer frequencies of ``n`` equally likely symbols (:func:`quantize_pmf_exact` on ``1/n`` each): the model of
    a bitstream v4 step choice (SPEC §4.1)."""
    return quantize_pmf_exact([Fraction(1, n)] * n)


def histogram_freqs(values: np.ndarray, offset: int, n_data: int) -> list[int]:
    """Integer frequencies (``n_data`` data symbols + escape) of a histogram of integer ``values``: add-one counts
    ``k_i + 1`` over the values ``offset … offset + n_data − 1`` and the escape (every other value), then
    :func:`quantize_pmf_exact` on the exact ratios. Integers in, integers out: every machine gets the same row."""
    v = np.asarray(values, dtype=np.int64).reshape(-1) - offset
    v = np.where((v < 0) | (v >= n_data), n_data, v)
    counts = np.bincount(v, minlength=n_data + 1).astype(np.int64) + 1
    total = int(counts.sum())
    return quantize_pmf_exact([Fraction(int(k), total) for k in counts])


@dataclass(frozen=True)
class CodingTable:
    """Per-channel frozen frequencies ``freqs`` (C, L) int32 and value offsets ``offsets`` (C,) int64.

    ``shared=True`` means one row serves every channel (the Irwin-Hall residual table).
    """

    offsets: np.ndarray
    freqs: np.ndarray
    shared: bool = False

    def __post_init__(self) -> None:
        f = self.freqs
        if f.ndim != 2 or f.shape[1] < 2 or f.shape[1] > MAX_SYMBOLS:
            raise ValueError(f"table must be (C, L) with 2 <= L <= {MAX_SYMBOLS}, got {f.shape}")
        if (f < 1).any() or (f.sum(axis=1) != TOTAL).any():
            raise ValueError("table frequencies must be >= 1 and sum to 2**PRECISION per channel")
        # constriction takes float probabilities; integers <= 2**16 are exact in float32.
        object.__setattr__(self, "probs", f.astype(np.float32))

    @cached_property
    def cdf(self) -> np.ndarray:
        """(C, L + 1) int64: the 24-bit model of each row (bitstream_spec/SPEC.md §4.1: constriction's fast leaky
        quantization, computed in binary32), channel ``c``'s symbol ``s`` coded with ``[cdf[c, s], cdf[c, s + 1])``,
        ``cdf[c, L] = 2^24``. Built on first use and kept: the tables are frozen, so the coder builds it once per table
        (as CompressAI's ``update()`` builds its CDFs once), not once per frame. A row's partial sums are integers
        ≤ 2^16, exact in float32, so it is the same on every machine; tests/test_entropy_rans.py checks it against
        constriction symbol by symbol."""
        source = self.__dict__.get("_source")
        if source is not None:  # rows of another table (select_rows)
            return source[0].cdf[source[1]]
        f = self.freqs.astype(np.int64)
        n = f.shape[1]
        before = np.zeros_like(f)
        np.cumsum(f[:, :-1], axis=1, out=before[:, 1:])
        scale = np.float32((1 << CODER_PRECISION) - n) / np.float32(TOTAL)  # Σ f = 2^16 exactly (checked above)
        cdf = np.empty((f.shape[0], n + 1), dtype=np.int64)
        cdf[:, :n] = (before.astype(np.float32) * scale).astype(np.int64) + np.arange(n)  # float32 product, truncated
        cdf[:, n] = 1 << CODER_PRECISION
        return cdf

    def intervals(self, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) int64 (C,): each channel's symbol ``sym`` (C,) int coded with ``[cdf[c, s], cdf[c, s + 1])``
        (a shared table: its one row for every channel); for :meth:`select_rows` tables gathered from the source
        table's cdf, which is not copied."""
        s = np.asarray(sym, dtype=np.int64)
        table, rows = self.__dict__.get("_source") or (self, np.zeros_like(s) if self.shared else np.arange(s.size))
        flat = table.cdf.reshape(-1)
        at = rows * (table.num_symbols + 1) + s
        return flat[at], flat[at + 1]

    def select_rows(self, rows: np.ndarray) -> CodingTable:
        """The per-channel table whose channel ``c`` is row ``rows[c]`` (C,) int of this one, sharing this table's
        cdf: a table chosen per frame (temporal context) does not rebuild the coder's model."""
        out = CodingTable(self.offsets[rows], self.freqs[rows])
        out.__dict__["_source"] = (self, rows)  # read by cdf and intervals
        return out

    @property
    def num_symbols(self) -> int:
        return int(self.freqs.shape[1])

    def symbols(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map values (C,) to symbols; returns (symbols int32, boolean escape mask)."""
        s = values.astype(np.int64) - self.offsets
        esc = (s < 0) | (s >= self.num_symbols - 1)
        return np.where(esc, self.num_symbols - 1, s).astype(np.int32), esc

    def channel_bits(self, values: np.ndarray) -> np.ndarray:
        """(C,) float64: each value's information content under this table, ``PRECISION - log2(freq)`` bits, plus
        32 raw bits where it escapes."""
        sym, esc = self.symbols(values)
        f = self.freqs[0, sym] if self.shared else np.take_along_axis(self.freqs, sym[:, None].astype(np.int64), 1)[:, 0]
        return PRECISION - np.log2(f.astype(np.float64)) + 32.0 * esc

    def ideal_bits(self, values: np.ndarray) -> float:
        """Information content of ``values`` under this table, escapes' 32 raw bits included."""
        return float(self.channel_bits(values).sum())



def channel_histogram_table(values: np.ndarray) -> CodingTable:
    """A per-channel table fitted to integer ``values`` (N, C): each channel's add-one histogram over the values
    ``offset[c] … offset[c] + L − 2`` (one symbol count L for all channels, at most MAX_SYMBOLS, centred on each
    channel's seen range; values outside escape) plus the escape, turned into integers by :func:`quantize_pmf`."""
    v = np.asarray(values, dtype=np.int64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    n_data = int(min((hi - lo + 1).max(), MAX_SYMBOLS - 1))
    offsets = lo - np.maximum(n_data - (hi - lo + 1), 0) // 2
    sym = v - offsets
    sym = np.where((sym < 0) | (sym >= n_data), n_data, sym)
    counts = np.ones((v.shape[1], n_data + 1))
    np.add.at(counts, (np.broadcast_to(np.arange(v.shape[1]), sym.shape), sym), 1.0)
    return CodingTable(offsets, quantize_pmf(counts / counts.sum(axis=1, keepdims=True)))


def rebinned(table: CodingTable, factor: int) -> CodingTable:
    """The table of a step ``factor`` times coarser, derived from this one (per channel, not shared tables).

    A coarse value ``v`` covers the fine values' interval ``[(v − ½)·factor, (v + ½)·factor]``; each fine value's
    probability (its bin ``[u − ½, u + ½]``, taken as uniform inside) goes to the coarse values in proportion to the
    overlap, the escape keeps its probability (and takes what falls beyond MAX_SYMBOLS), and the result is turned into
    integers by :func:`quantize_pmf`. Raises ValueError for ``factor`` < 2 or a shared table.
    """
    if factor < 2 or table.shared:
        raise ValueError("rebinning needs a factor of at least 2 and a per-channel table")
    f = table.freqs.astype(np.float64) / TOTAL
    data, escape = f[:, :-1], f[:, -1:]
    n_fine = data.shape[1]
    lo = np.floor((table.offsets - 0.5) / factor + 0.5).astype(np.int64)  # coarse value of the lowest fine edge
    hi = np.floor((table.offsets + n_fine - 0.5) / factor + 0.5).astype(np.int64)
    n_coarse = int(min((hi - lo + 1).max(), MAX_SYMBOLS - 1))
    u = table.offsets[:, None] + np.arange(n_fine)[None, :]  # fine values (C, n_fine)
    out = np.zeros((len(f), n_coarse))
    for j in range(n_coarse):
        v = (lo + j)[:, None]
        overlap = np.clip(np.minimum(u + 0.5, (v + 0.5) * factor) - np.maximum(u - 0.5, (v - 0.5) * factor), 0.0, 1.0)
        out[:, j] = (data * overlap).sum(axis=1)
    missing = np.clip(data.sum(axis=1) - out.sum(axis=1), 0.0, None)
    return CodingTable(lo, quantize_pmf(np.concatenate([out, escape + missing[:, None]], axis=1)))
