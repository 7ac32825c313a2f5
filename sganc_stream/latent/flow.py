"""The learned bijection T: a RealNVP flow over one W+ row (a ``width``-dim vector).

13 affine coupling layers; each predicts a log-scale and a translation for half of the coordinates from
the other half with two 3-layer fully connected nets (LeakyReLU hidden, Tanh on the log-scale output),
no batch norm, so T is exactly invertible and deterministic. Masks alternate between even and odd
coordinates. The last layer of each net starts at zero, so an untrained T is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._split(x)
        return self._join(a, b * torch.exp(self.scale(a)) + self.shift(a))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = self._split(y)
        return self._join(a, (b - self.shift(a)) * torch.exp(-self.scale(a)))


class RealNVP(nn.Module):
    """T: (..., width) → (..., width), with ``inverse`` as T⁻¹."""

    def __init__(self, width: int, hidden: int = 128, couplings: int = NUM_COUPLINGS) -> None:
        super().__init__()
        self.width = width
        self.layers = nn.ModuleList(AffineCoupling(width, hidden, i % 2) for i in range(couplings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y
