"""Learned fully factorized density per latent dimension (compressai's EntropyBottleneck), and its freezing.

Training sees values in units of the training step (Δ = 1) with additive uniform noise. Freezing evaluates
the learned CDF at the bin edges of any step Δ, ``P(v) = c((v + 1/2)Δ) - c((v - 1/2)Δ)``, over a window of
integers covering each channel's learned quantiles, and turns that into integer tables. So one trained
density yields tables for several rates; after freezing, no network is ever evaluated to code.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # compressai scripts modules with the deprecated torch.jit at import
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck

from sganc_stream.entropy.tables import MAX_SYMBOLS, CodingTable, quantize_pmf


class FactorizedDensity(EntropyBottleneck):
    """EntropyBottleneck over vectors (N, C); ``bits`` gives the rate of noisy values."""

    def noisy_bits(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y + U(-1/2, 1/2), total bits of that noisy sample under the density)."""
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        lik, _, _ = self._likelihood(y_tilde.t().unsqueeze(1))
        lik = self.likelihood_lower_bound(lik)
        return y_tilde, -torch.log2(lik).sum()

    def _bounds(self, step: float, seen: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel integer range at ``step``: the learned tail quantiles, widened to every value seen."""
        q = self.quantiles[:, 0, :].detach().double().cpu().numpy()
        lo, hi = q[:, 0], q[:, 2]
        if seen is not None:
            lo, hi = np.minimum(lo, seen[0]), np.maximum(hi, seen[1])
        return np.floor(lo / step).astype(np.int64), np.ceil(hi / step).astype(np.int64)

    def data_symbols(self, step: float, seen: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """Number of integers needed to cover every channel's range at ``step`` (capped; wider tails escape)."""
        lo, hi = self._bounds(step, seen)
        return int(min((hi - lo + 1).max(), MAX_SYMBOLS - 1))

    @torch.no_grad()
    def freeze(self, step: float, n_data: int | None = None, seen: tuple[np.ndarray, np.ndarray] | None = None) -> CodingTable:
        """Integer table for step ``step`` (training units) with ``n_data`` data symbols plus the escape.

        ``seen`` = per-channel (min, max) of the training values, so the table covers what the data holds
        even where the learned quantiles have not converged.
        """
        eb = copy.deepcopy(self).double().cpu()
        q = eb.quantiles[:, 0, :].numpy()  # (C, 3): low tail, median, high tail
        lo, hi = self._bounds(step, seen)
        width = hi - lo + 1
        n_data = n_data or self.data_symbols(step, seen)
        centre = np.rint(q[:, 1] / step).astype(np.int64)
        offsets = np.where(width <= n_data, lo - (n_data - width) // 2, centre - n_data // 2)
        v = torch.from_numpy(offsets[:, None] + np.arange(n_data)[None, :]).double()  # (C, n_data)
        lower = eb._logits_cumulative(((v - 0.5) * step).unsqueeze(1), stop_gradient=True)[:, 0]
        upper = eb._logits_cumulative(((v + 0.5) * step).unsqueeze(1), stop_gradient=True)[:, 0]
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).numpy()
        escape = np.clip(1.0 - pmf.sum(axis=1, keepdims=True), 0.0, None)
        freqs = quantize_pmf(np.concatenate([pmf, escape], axis=1))
        return CodingTable(offsets=offsets, freqs=freqs)
