"""Temporal context for latent differences (bitstream v5): per channel, one of a few frozen tables chosen by the
previous decoded difference.

The factorized model of the SGANC paper (Ballé et al.'s fully factorized prior) codes each channel of a latent
difference ``v_t`` with one fixed table, as if frames were independent. They are not: a channel that moved by +1 at
frame t−1 tends to move the same way at t (motion is smooth), and one that did not move tends to stay. So with
``--inter-context temporal`` each channel ``c`` of ``v_t`` is coded with the row

    row(c) = context(c) · S + class(c),   context(c) = clip(v_prev[c], −1, 1) + 1 ∈ {0, 1, 2}

of a small frozen table (``CONTEXTS · S`` rows; S channel classes), where ``v_prev`` is the difference part of the
stream's previous inter packet (all zero for the first inter frame after an intra frame, since an intra frame has no
difference). The context is computed from already-decoded integers only, so every decoder derives the same rows and
decoding stays integer-exact (the context modelling of CABAC, ITU-T H.264 §9.3, on the previous frame instead of the
neighbouring symbols; the frozen tables as CompressAI's ``update()`` freezes its CDFs). ``class(c)`` is stored per
channel in the model; rows share one value range ``offset … offset + L − 2`` plus the escape (bitstream_spec/SPEC.md
§4.3).

How a model's tables are made is not normative: :func:`fit_context_tables` takes the add-one histogram of the
differences an encoder sends on training sequences (its own mode, drift damping, dead zone and decimation: the
tables fit the integers they will code) per (context, class) row (:func:`histogram_freqs`, integers in, integers
out), with the classes the S quantiles of each channel's share of zero differences. Measured on held-out clips with
the default face model (``benchmarks/inter_context.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sganc_stream.entropy.tables import MAX_SYMBOLS, CodingTable, histogram_freqs

CONTEXTS = 3  # previous difference < 0, = 0, > 0
MAX_CLASSES = 64  # channel classes a model may define
CONTEXT_CLASSES = 8  # channel classes fitted by default (benchmarks/inter_context.py measured the default model with 8)
INTER_CONTEXTS = ("factorized", "temporal")  # how inter differences are coded: the paper's, or with temporal context


def difference_context(previous: np.ndarray) -> np.ndarray:
    """(C,) int64 context of each channel: 0, 1 or 2 for a previous decoded difference ``previous`` (C,) int of
    < 0, 0, > 0."""
    return np.clip(previous, -1, 1).astype(np.int64) + 1


@dataclass(frozen=True)
class ContextTables:
    """The temporal-context difference tables of one step preset.

    ``classes`` (C,) int64 in 0 … S−1; ``offsets`` (CONTEXTS·S,) int64 (one value per row, all equal in fitted
    tables but not required); ``freqs`` (CONTEXTS·S, L) int32 rows as in :class:`CodingTable`. ValueError for
    shapes or values out of range.
    """

    classes: np.ndarray
    offsets: np.ndarray
    freqs: np.ndarray

    def __post_init__(self) -> None:
        rows = self.freqs.shape[0] if self.freqs.ndim == 2 else -1
        s = rows // CONTEXTS
        if (rows < CONTEXTS or rows % CONTEXTS or s > MAX_CLASSES or self.offsets.shape != (rows,)
                or self.classes.ndim != 1 or self.classes.size == 0
                or self.classes.min() < 0 or self.classes.max() >= s):
            raise ValueError(f"context tables need {CONTEXTS}·S rows (S ≤ {MAX_CLASSES}), one offset per row and "
                             "channel classes in 0 … S−1")
        # frequency rules (≥ 1, sum 2^16, 2 … MAX_SYMBOLS symbols); kept, so the coder's model is built once
        object.__setattr__(self, "_table", CodingTable(self.offsets, self.freqs))

    @property
    def num_classes(self) -> int:
        return self.freqs.shape[0] // CONTEXTS

    def table(self, previous: np.ndarray) -> CodingTable:
        """The per-channel table of a difference whose channels' previous decoded difference is ``previous`` (C,)."""
        rows = difference_context(previous) * self.num_classes + self.classes
        return self._table.select_rows(rows)


def fit_context_tables(differences: np.ndarray, previous: np.ndarray, classes: int = CONTEXT_CLASSES) -> ContextTables:
    """The context tables of one step preset, fitted on what an encoder sent: ``differences`` (N, C) int, the
    difference part of N inter packets (repeats left out: they are not coded), and ``previous`` (N, C) int, the context
    memory each was coded after (the previous coded difference; zero after an intra frame), e.g. from
    ``training.latent_codec.coded_integers``. Each row: the add-one histogram (:func:`histogram_freqs`) of the
    differences whose previous difference gives that context, on the values ``−h … h`` (``h`` the largest |difference|
    seen, at most (MAX_SYMBOLS − 2) / 2) plus the escape; the ``classes`` channel classes are the quantiles of each
    channel's share of zero differences. ValueError for no differences, mismatched shapes or a class count outside
    1 … MAX_CLASSES."""
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be in 1 … {MAX_CLASSES}")
    v, pv = np.asarray(differences, dtype=np.int64), np.asarray(previous, dtype=np.int64)
    if v.ndim != 2 or len(v) < 1 or v.shape != pv.shape:
        raise ValueError("fitting context tables needs at least one coded difference (N, C) and its previous one")
    h = int(min(np.abs(v).max(initial=0), (MAX_SYMBOLS - 2) // 2))
    zero = (v == 0).mean(axis=0)
    edges = np.quantile(zero, np.linspace(0.0, 1.0, classes + 1)[1:-1])
    cls = np.searchsorted(edges, zero, side="right").astype(np.int64)
    rows = difference_context(pv) * classes + cls[None, :]
    freqs = [histogram_freqs(v[rows == r], -h, 2 * h + 1) for r in range(CONTEXTS * classes)]
    return ContextTables(cls, np.full(CONTEXTS * classes, -h, np.int64), np.array(freqs, dtype=np.int32))
