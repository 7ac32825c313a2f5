"""The learned bijection T: a RealNVP flow over one W+ row (a ``width``-dim vector).

13 affine coupling layers; each predicts a log-scale and a translation for half of the coordinates from
the other half with two 3-layer fully connected nets (LeakyReLU hidden, Tanh on the log-scale output),
no batch norm, so T is exactly invertible and deterministic. Masks alternate between even and odd
coordinates. The last layer of each net starts at zero, so an untrained T is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sganc_stream.threads import single_thread

NUM_COUPLINGS = 13


def _mlp(dim_in: int, hidden: int, dim_out: int, tanh: bool) -> nn.Sequential:
    last = nn.Linear(hidden, dim_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers: list[nn.Module] = [nn.Linear(dim_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), last]
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a); y_a = x_a, with (a, b) = (even, odd) or (odd, even)."""

    def __init__(self, width: int, hidden: int, parity: int) -> None:
        super().__init__()
        self.parity = parity
        n_even, n_odd = width - width // 2, width // 2
        n_in, n_out = (n_odd, n_even) if parity else (n_even, n_odd)
        self.scale = _mlp(n_in, hidden, n_out, tanh=True)
        self.shift = _mlp(n_in, hidden, n_out, tanh=False)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x[..., 1::2], x[..., 0::2]) if self.parity else (x[..., 0::2], x[..., 1::2])

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty(*a.shape[:-1], a.shape[-1] + b.shape[-1], dtype=a.dtype, device=a.device)
        if self.parity:
            out[..., 1::2], out[..., 0::2] = a, b
        else:
            out[..., 0::2], out[..., 1::2] = a, b
        return out

    def couple(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The new b half from the (a, b) halves: ``b * exp(s(a)) + t(a)``."""
        return b * torch.exp(self.scale(a)) + self.shift(a)

    def uncouple(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`couple`: ``(b - t(a)) * exp(-s(a))``."""
        return (b - self.shift(a)) * torch.exp(-self.scale(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._split(x)
        return self._join(a, self.couple(a, b))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = self._split(y)
        return self._join(a, self.uncouple(a, b))


class RealNVP(nn.Module):
    """T: (..., width) → (..., width), with ``inverse`` as T⁻¹.

    The composition splits the vector into its even and odd coordinates once, lets each coupling update one half in
    place of interleaving and splitting at every layer, and interleaves once at the end: the same arithmetic on the
    same values as applying each :class:`AffineCoupling` in turn (bit for bit on a ``(rows, width)`` frame, the latent
    codec's input; to float rounding on batched input, where BLAS may block differently: tests/test_latent_flow.py),
    with 2 copies per pass instead of 3 per layer, and an exported graph of plain Gemm/Exp/Mul/Add with no scatter.
    """

    def __init__(self, width: int, hidden: int = 128, couplings: int = NUM_COUPLINGS) -> None:
        super().__init__()
        self.width = width
        self.layers = nn.ModuleList(AffineCoupling(width, hidden, i % 2) for i in range(couplings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        even, odd = x[..., 0::2], x[..., 1::2]
        for layer in self.layers:
            if layer.parity:
                even = layer.couple(odd, even)
            else:
                odd = layer.couple(even, odd)
        return _interleave(even, odd)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        even, odd = y[..., 0::2], y[..., 1::2]
        for layer in reversed(self.layers):
            if layer.parity:
                even = layer.uncouple(odd, even)
            else:
                odd = layer.uncouple(even, odd)
        return _interleave(even, odd)


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """The vector whose even coordinates are ``even`` and odd ones ``odd`` (``even`` has as many or one more)."""
    if even.shape[-1] == odd.shape[-1]:
        return torch.stack((even, odd), dim=-1).flatten(-2)
    out = torch.empty(*even.shape[:-1], even.shape[-1] + odd.shape[-1], dtype=even.dtype, device=even.device)
    out[..., 0::2], out[..., 1::2] = even, odd
    return out



class FlowStack(nn.Module):
    """T (or T⁻¹ with ``inverse``) over a whole W+ frame ``(rows, width)``: one flow per stage group of rows."""

    def __init__(self, flows: list[RealNVP], groups: list[tuple[int, int]], inverse: bool) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.groups = [(a, b) for a, b in groups]
        self.inverse = inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [flow.inverse(x[a:b]) if self.inverse else flow(x[a:b]) for flow, (a, b) in zip(self.flows, self.groups)]
        return torch.cat(parts, 0)


class TorchFlows:
    """T and T⁻¹ of a whole W+ frame in PyTorch eager on one thread: a :class:`sganc_stream.latent.model.FlowRunner`
    (the reference; the default is the faster :class:`sganc_stream.latent.numpy_flow.NumpyFlows`)."""

    def __init__(self, flows: list[RealNVP], groups: list[tuple[int, int]]) -> None:
        self.t, self.t_inv = FlowStack(flows, groups, inverse=False), FlowStack(flows, groups, inverse=True)

    @torch.no_grad()
    def forward(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(rows, width)`` W+ → float32 ``(rows, width)`` proxy."""
        with single_thread():
            return self.t(torch.from_numpy(x)).numpy()

    @torch.no_grad()
    def inverse(self, y: np.ndarray) -> np.ndarray:
        """float32 ``(rows, width)`` proxy → float32 ``(rows, width)`` W+."""
        with single_thread():
            return self.t_inv(torch.from_numpy(y)).numpy()
