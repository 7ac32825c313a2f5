"""StyleGAN2 residual discriminator (training only; the runtime never needs it).

From-RGB, residual down-sampling blocks to 4x4, minibatch standard deviation, then two linear layers. Plain
convolutions with the same channel table as the generator (``channels(res)``) so D and G stay in proportion.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sganc_stream.models.stylegan2 import GeneratorConfig

SQRT2 = math.sqrt(2.0)


class DownBlock(nn.Module):
    """Two 3x3 convolutions and a 2x average-pool, with a 1x1 pooled skip; scaled by 1/√2 as in StyleGAN2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + F.avg_pool2d(self.skip(x), 2)) / SQRT2


class Discriminator(nn.Module):
    """Images ``(n, 3, size, size)`` in [-1, 1] → logits ``(n,)``."""

    def __init__(self, config: GeneratorConfig, stddev_group: int = 4):
        super().__init__()
        size = config.size
        self.from_rgb = nn.Conv2d(3, config.channels(size), 1)
        blocks = []
        res = size
        while res > 4:
            blocks.append(DownBlock(config.channels(res), config.channels(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        ch = config.channels(4)
        self.stddev_group = stddev_group
        self.final_conv = nn.Conv2d(ch + 1, ch, 3, padding=1)
        self.final = nn.Sequential(nn.Linear(ch * 16, ch), nn.LeakyReLU(0.2), nn.Linear(ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.leaky_relu(self.from_rgb(x), 0.2))
        n, c, h, w = x.shape
        g = math.gcd(n, self.stddev_group)
        std = x.float().view(g, -1, c, h, w).var(0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
        std = std.to(x.dtype).view(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = F.leaky_relu(self.final_conv(torch.cat([x, std], 1)), 0.2)
        return self.final(x.flatten(1)).squeeze(1)
