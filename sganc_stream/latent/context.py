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
open-loop differences of training sequences per (context, class) row (:func:`histogram_freqs`, integers in, integers
out), with the classes the S quantiles of each channel's probability of a zero difference under the model's own
factorized table. Measured on held-out clips with the default face model (``benchmarks/inter_context.py``).
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
        CodingTable(self.offsets, self.freqs)  # frequency rules (≥ 1, sum 2^16, 2 … MAX_SYMBOLS symbols)

    @property
    def num_classes(self) -> int:
        return self.freqs.shape[0] // CONTEXTS

    def table(self, previous: np.ndarray) -> CodingTable:
        """The per-channel table of a difference whose channels' previous decoded difference is ``previous`` (C,)."""
        rows = difference_context(previous) * self.num_classes + self.classes
        return CodingTable(self.offsets[rows], self.freqs[rows])


def fit_context_tables(proxies: list[np.ndarray], steps: list[float], factorized: list[CodingTable],
                       classes: int = 8) -> list[ContextTables]:
    """Context tables for every step preset from training proxies (:meth:`LatentCodecModel.to_proxy` of each frame)
    ``proxies``: a list of (frames, C) float arrays, one per sequence, ``steps`` the presets and ``factorized`` their
    difference tables (which define the channel classes). Each row: the add-one histogram of the open-loop differences
    ``round(y_t − y_{t−1})`` (``y = proxy / step``) whose previous difference gives that context, on the values
    ``−h … h`` with ``h`` the largest |difference| seen (at most (MAX_SYMBOLS − 2) / 2), plus the escape.
    ValueError for fewer than 2 frames in all or a class count outside 1 … MAX_CLASSES."""
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be in 1 … {MAX_CLASSES}")
    if sum(max(len(p) - 1, 0) for p in proxies) < 1:
        raise ValueError("fitting context tables needs sequences of at least 2 frames")
    out = []
    for step, fact in zip(steps, factorized):
        cur, prev = [], []
        for p in proxies:
            v = np.rint(np.diff(np.asarray(p, dtype=np.float64) / step, axis=0)).astype(np.int64)
            cur.append(v)
            prev.append(np.concatenate([np.zeros((1, v.shape[1]), np.int64), v[:-1]]))
        v, pv = np.concatenate(cur), np.concatenate(prev)
        h = int(min(np.abs(v).max(initial=0), (MAX_SYMBOLS - 2) // 2))
        zero = np.clip(-fact.offsets, 0, fact.num_symbols - 1)
        p0 = fact.freqs[np.arange(len(zero)), zero].astype(np.float64)
        edges = np.quantile(p0, np.linspace(0.0, 1.0, classes + 1)[1:-1])
        cls = np.searchsorted(edges, p0, side="right").astype(np.int64)
        rows = difference_context(pv) * classes + cls[None, :]
        freqs = [histogram_freqs(v[rows == r], -h, 2 * h + 1) for r in range(CONTEXTS * classes)]
        out.append(ContextTables(cls, np.full(CONTEXTS * classes, -h, np.int64), np.array(freqs, dtype=np.int32)))
    return out
