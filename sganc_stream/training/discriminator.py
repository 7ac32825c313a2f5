"""StyleGAN2 residual discriminator (training only; the runtime never needs it).

From-RGB, residual down-sampling blocks to 4x4, minibatch standard deviation, then two linear layers, with the
same channel table as the generator (``channels(res)``) so D and G stay in proportion. Every layer has an
equalized learning rate (Karras et al. 2018, "Progressive growing of GANs", §4.1; kept in StyleGAN2): weights are
stored N(0, 1) and scaled by 1/√fan_in at run time, and activations get StyleGAN2's leaky-ReLU gain √2. That is
what StyleGAN2's learning rate 2e-3 presumes: with plain ``nn.Conv2d`` layers the same Adam step moves each
weight √fan_in times further relative to its size, and a fresh D's logits swung to ±30…±1000 within a few steps
(measured on the 128 px face model: MODEL_CARD.md, "Adversarial term").
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sganc_stream.models.stylegan2 import EqualLinear, GeneratorConfig

SQRT2 = math.sqrt(2.0)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate: stored weight N(0, 1) × 1/√(in·k·k)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class DownBlock(nn.Module):
    """Two 3x3 convolutions and a 2x average-pool, with a 1x1 pooled skip; scaled by 1/√2 as in StyleGAN2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _act(self.conv1(x))
        y = F.avg_pool2d(_act(self.conv2(y)), 2)
        return (y + F.avg_pool2d(self.skip(x), 2)) / SQRT2


class Discriminator(nn.Module):
    """Images ``(n, 3, input_size, input_size)`` in [-1, 1] → logits ``(n,)`` (and, on request, each block's
    activations).

    ``input_size`` (a power of two, 8 … ``config.size``; default ``config.size``) smaller than the generator's
    output makes a patch discriminator for full-resolution crops, as pix2pix's PatchGAN judges local texture
    (Isola et al. 2017, §3.2.2): its blocks keep the widths of the full discriminator's first blocks (those that
    see full-resolution detail) and there are fewer of them, so it costs about (input_size / size)² as much.
    """

    def __init__(self, config: GeneratorConfig, stddev_group: int = 4, input_size: int | None = None):
        super().__init__()
        size = config.size
        crop = size if input_size is None else input_size
        if crop < 8 or crop > size or crop & (crop - 1):
            raise ValueError(f"discriminator input size must be a power of two in 8..{size}, got {crop}")
        self.input_size = crop
        self.from_rgb = EqualConv2d(3, config.channels(size), 1)
        blocks = []
        res = size  # the generator resolution whose widths each block takes
        for _ in range(int(math.log2(crop)) - 2):
            blocks.append(DownBlock(config.channels(res), config.channels(res // 2)))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        ch = config.channels(res)
        self.stddev_group = stddev_group
        self.final_conv = EqualConv2d(ch + 1, ch, 3)
        self.final = nn.Sequential(EqualLinear(ch * 16, ch, activate=True), EqualLinear(ch, 1))

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(n,)``; with ``features=True`` also the outputs of from-RGB and of every down-sampling block
        (``(n, channels(r), r, r)`` for r = size … 4), the intermediate features of pix2pixHD's feature matching."""
        x = _act(self.from_rgb(x))
        feats = [x]
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        n, c, h, w = x.shape
        g = math.gcd(n, self.stddev_group)
        std = x.float().view(g, -1, c, h, w).var(0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
        std = std.to(x.dtype).view(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = _act(self.final_conv(torch.cat([x, std], 1)))
        logits = self.final(x.flatten(1)).squeeze(1)
        return (logits, feats) if features else logits


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN (Isola et al. 2017, §3.2.2 and appendix 6.1.2, the 70 × 70 "C64-C128-C256-C512"
    discriminator): images ``(n, in_channels, h, w)`` in [-1, 1] → logits ``(n,)``, the mean of a map of per-patch
    logits. ``in_channels`` 6 is pix2pix's conditional form: the image stacked with what it is conditioned on.

    ``n_layers`` 4 × 4 convolutions of stride 2 (widths ``width`` · 2^k, at most 8 · ``width``), one of stride 1 and a
    1-channel 4 × 4 output, leaky ReLU 0.2, no normalisation layers (R1 regularises D instead, as in StyleGAN2).
    Each output logit sees a square patch (70 px for ``n_layers`` = 3) and judges only its texture, so it learns
    detail from few steps: on a real-against-blurred probe of 128 px faces it separates what the residual StyleGAN2
    discriminator could not (``benchmarks/d_blur_probe.py``). Works on any input size ≥ its receptive field.
    """

    def __init__(self, width: int = 32, n_layers: int = 3, in_channels: int = 3):
        super().__init__()
        if width < 1 or n_layers < 1 or in_channels < 1:
            raise ValueError(f"PatchGAN width, layers and input channels must be >= 1, got {width}, {n_layers}, "
                             f"{in_channels}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1)]
        ch = width
        for k in range(1, n_layers + 1):
            out = width * min(2 ** k, 8)
            layers.append(nn.Conv2d(ch, out, 4, 2 if k < n_layers else 1, 1))
            ch = out
        self.convs = nn.ModuleList(layers)
        self.out = nn.Conv2d(ch, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(n,)``; with ``features=True`` also every hidden layer's activations (feature matching)."""
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        logits = self.out(x).mean((1, 2, 3))
        return (logits, feats) if features else logits
