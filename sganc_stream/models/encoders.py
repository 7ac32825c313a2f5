"""pSp (GradualStyleEncoder) and e4e (Encoder4Editing) W+ encoders on an IR-SE50 backbone.

Module names match the ``encoder.*`` keys of ``psp_ffhq_encode.pt`` / ``e4e_ffhq_encode.pt`` (the
prefix stripped), plus one persistent buffer ``latent_avg`` (stored beside the state dict in those
files), so ``forward`` returns W+ ready for the generator: ``codes(x) + latent_avg``.
Input: images ``(n, 3, H, W)`` normalised to [-1, 1] (ToTensor then Normalize(0.5, 0.5)); anything other
than 256x256 is resized first, as the projects' ``Resize((256, 256))`` transform does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sganc_stream.models.stylegan2 import EqualLinear

INPUT_SIZE = 256
# Body units after which the fine / middle / coarse feature maps are tapped (IR-SE50).
TAP_FINE, TAP_MIDDLE, TAP_COARSE = 6, 20, 23
COARSE_END, MIDDLE_END = 3, 7  # styles [0, 3) read c3, [3, 7) read p2, [7, n) read p1
IR_SE50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: channel weights from global average pooling."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """Pre-activation IR unit with SE; the stride sits on the second 3x3 convolution."""

    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """Stride-2 3x3 convolutions (each + LeakyReLU 0.01) down to 1x1, then an EqualLinear."""

    def __init__(self, in_ch: int, out_ch: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_ch, out_ch)
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).view(-1, self.out_ch))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(n, H, W, 3)`` → float ``(n, 3, H, W)`` in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""
    return unit_range(images_as_tensor(images))


def images_as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(n, H, W, 3)`` → the same values as a uint8 tensor ``(n, H, W, 3)``; ValueError
    for anything else."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (H, W, 3) or (n, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images.reshape(-1, *images.shape[-3:])))


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB tensor ``(n, H, W, 3)`` → float ``(n, 3, H, W)`` in [-1, 1]: the conversion of
    :func:`images_to_tensor`, as tensor operations (so that it traces into the exported encoder graph)."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class IRSE50Encoder(nn.Module):
    """Shared IR-SE50 backbone, FPN laterals and per-row style heads; subclasses combine the heads."""

    kind = ""

    def __init__(self, n_styles: int = 18, input_nc: int = 3):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_ch, depth, n in IR_SE50_STAGES:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 512, 16 if i < COARSE_END else 32 if i < MIDDLE_END else 64) for i in range(n_styles)
        )
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)
        self.register_buffer("latent_avg", torch.zeros(n_styles, 512))
        self.n_styles = n_styles

    @property
    def n_latent(self) -> int:
        return self.n_styles

    @property
    def input_size(self) -> int:
        return INPUT_SIZE

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c1, c2, c3): 128 ch at 1/4, 256 ch at 1/8, 512 ch at 1/16 of the input size."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in (TAP_FINE, TAP_MIDDLE, TAP_COARSE):
                taps[i] = x
        return taps[TAP_FINE], taps[TAP_MIDDLE], taps[TAP_COARSE]

    def codes(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 3, H, W)`` in [-1, 1] → W+ ``(n, n_styles, 512)`` including ``latent_avg``."""
        return self.codes(x) + self.latent_avg


class GradualStyleEncoder(IRSE50Encoder):
    """pSp: each W+ row from its own head on the coarse (c3), middle (p2) or fine (p1) feature map."""

    kind = "psp"

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        feats = [c3 if i < COARSE_END else p2 if i < MIDDLE_END else p1 for i in range(self.n_styles)]
        return torch.stack([head(f) for head, f in zip(self.styles, feats)], dim=1)


class Encoder4Editing(IRSE50Encoder):
    """e4e: one base code w0 from c3 repeated over all rows, plus per-row offsets (inference stage: all)."""

    kind = "e4e"

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        rows = [w0]
        feats = c3
        for i in range(1, self.n_styles):
            if i == COARSE_END:
                p2 = upsample_add(c3, self.latlayer1(c2))
                feats = p2
            elif i == MIDDLE_END:
                feats = upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](feats))
        return torch.stack(rows, dim=1)
