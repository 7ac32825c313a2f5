"""StyleGAN2 generator with the rosinality / pSp / e4e state-dict layout, in pure PyTorch.

Module names, parameter shapes and the arithmetic (equalized learning rate, lr-multiplied mapping,
demodulation, FIR blur after the transposed convolution, ToRGB skips) follow rosinality's
``stylegan2-pytorch`` so its ``g_ema`` state dicts and the ``decoder.*`` part of pSp/e4e checkpoints
load strictly. Noise comes from the ``noises.noise_k`` buffers, so decoding is deterministic.

Modulation is applied to activations (rosinality's ``fused=False`` form) rather than through grouped
per-sample weights: it is the same function (the reference measured ≤ 8e-6 between the two forms),
runs batched as one ordinary convolution, and keeps fp16 and CUDA graphs simple.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class GeneratorConfig:
    """What determines the generator's layout; stored as the bundle's ``generator`` config."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = field(default=(1, 3, 3, 1))
    channel_max: int = 512  # caps every layer's width: small generators for CPU; 512 keeps the official layouts
    # > 0: width = min(channel_base // resolution, channel_max), StyleGAN2-ADA's cbase/cmax rule (Karras et al.
    # 2020), which tapers toward high resolution; 0 keeps rosinality's table (the official layouts).
    channel_base: int = 0

    def __post_init__(self) -> None:
        ints = (self.size, self.style_dim, self.n_mlp, self.channel_multiplier, self.channel_max)
        if any(type(v) is not int for v in ints) or type(self.lr_mlp) not in (int, float) or not 0 < self.lr_mlp <= 1:
            raise ValueError("generator config: size, style_dim, n_mlp, channel_multiplier, channel_max must be "
                             "integers and lr_mlp a number in (0, 1]")
        if not 1 <= len(self.blur_kernel) <= 8 or any(type(v) is not int or not 0 < v <= 1024 for v in self.blur_kernel):
            raise ValueError("generator config: blur_kernel must be 1 to 8 positive integers")
        log = math.log2(self.size) if self.size > 0 else 0.5
        if not (log.is_integer() and 6 <= log <= 10):
            raise ValueError(f"generator size must be a power of two in 64..1024, got {self.size}")
        # Upper bounds above every published layout (512, 8, 2, 512): a config read from a file decides sizes.
        if not (1 <= self.channel_multiplier <= 4 and 1 <= self.style_dim <= 1024 and 1 <= self.n_mlp <= 16
                and 1 <= self.channel_max <= 1024):
            raise ValueError("channel_multiplier (1..4), style_dim (1..1024), n_mlp (1..16) and channel_max (1..1024) "
                             "out of range")
        if type(self.channel_base) is not int or self.channel_base < 0 or self.channel_base > 1 << 20 or (
                self.channel_base and self.channel_base // self.size < 1):
            raise ValueError(f"channel_base must be 0 or an integer from the size ({self.size}) to 2^20, got {self.channel_base}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Rows of W+ (18 at 1024)."""
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        """Number of noise buffers / styled convolutions."""
        return 2 * self.log_size - 3

    def channels(self, resolution: int) -> int:
        """Feature maps at ``resolution`` (4..size)."""
        if self.channel_base:
            return min(self.channel_base // resolution, self.channel_max)
        cm = self.channel_multiplier
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
        return min(table[resolution], self.channel_max)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blur_kernel"] = list(self.blur_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {k: d[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier", "lr_mlp", "channel_max", "channel_base")
                 if k in d}
        if "blur_kernel" in d:
            kernel = d["blur_kernel"]
            known["blur_kernel"] = tuple(kernel) if isinstance(kernel, (list, tuple)) else kernel
        return cls(**known)


def fir_kernel(taps: tuple[int, ...], gain: float) -> torch.Tensor:
    """Separable 2-D FIR kernel normalised to sum ``gain`` (gain = factor² for up-sampling)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum() * gain


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """G's output ``(n, 3, H, W)`` float, nominally in [-1, 1] → uint8 RGB ``(n, H, W, 3)``: clamp to [-1, 1], then
    ``round((x + 1) · 127.5)`` (round half to even). The one image conversion of decoded frames (the PyTorch path
    and the exported ONNX generator graph both run it)."""
    return x.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: stored weight × lr_mul/√in, bias × lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            out = F.linear(x, self.weight * self.scale)
            return F.leaky_relu(out + self.bias * self.lr_mul, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU(0.2), gain √2 (rosinality's ``activate`` module)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * SQRT2


class Blur(nn.Module):
    """Depthwise 4x4 FIR filter with padding (1, 1); follows the stride-2 transposed convolution."""

    def __init__(self, taps: tuple[int, ...]):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, 4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # The kernel is symmetric, so correlation equals upfirdn2d's convolution.
        w = self.kernel.to(x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv2d(x, w, padding=1, groups=c)


class Upsample(nn.Module):
    """2x FIR up-sampling, identical to upfirdn2d(up=2, pad=(2, 1)) with a 4-tap kernel.

    Zero insertion followed by that padded 4x4 filter is a stride-2 transposed convolution with padding 1.
    """

    def __init__(self, taps: tuple[int, ...]):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, 4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv_transpose2d(x, w, stride=2, padding=1, groups=c)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution; optional demodulation and 2x up-sampling (transposed conv + blur)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        if upsample:
            self.blur = Blur(blur_kernel)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w)  # (n, in_ch)
        if self.demodulate:
            # Demodulation cancels any per-sample scale of the style, so bound it to keep float16
            # activations (x · style before the convolution) from overflowing.
            style = style / style.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * style[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # Σ over (in, k, k) of (weight · style)², computed as a matmul over in_ch.
            demod = torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
            out = out * demod[:, :, None, None]
        if self.upsample:
            out = self.blur(out)
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool, blur_kernel: tuple[int, ...]):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool, blur_kernel: tuple[int, ...]):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
    """W+ ``(n, n_latent, style_dim)`` → image ``(n, 3, size, size)``, nominally in [-1, 1], not clamped.

    ``mapping(z)`` gives w for z of shape ``(n, style_dim)``; ``synthesis`` is ``forward``.
    """

    def __init__(self, config: GeneratorConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else GeneratorConfig(**kwargs)
        self.config = cfg
        bk = cfg.blur_kernel
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activate=True) for _ in range(cfg.n_mlp)
        ])
        self.input = ConstantInput(cfg.channels(4))
        self.conv1 = StyledConv(cfg.channels(4), cfg.channels(4), cfg.style_dim, False, bk)
        self.to_rgb1 = ToRGB(cfg.channels(4), cfg.style_dim, False, bk)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = cfg.channels(4)
        for i in range(3, cfg.log_size + 1):
            out_ch = cfg.channels(2 ** i)
            self.convs.append(StyledConv(in_ch, out_ch, cfg.style_dim, True, bk))
            self.convs.append(StyledConv(out_ch, out_ch, cfg.style_dim, False, bk))
            self.to_rgbs.append(ToRGB(out_ch, cfg.style_dim, True, bk))
            in_ch = out_ch
        self.noises = nn.Module()
        for k in range(cfg.num_layers):
            r = 2 ** ((k + 5) // 2)
            self.noises.register_buffer(f"noise_{k}", torch.randn(1, 1, r, r))

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def size(self) -> int:
        return self.config.size

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z ``(n, style_dim)`` → w ``(n, style_dim)`` (PixelNorm + MLP; no truncation)."""
        return self.style(z)

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        if wplus.dim() == 2:  # one w for every row
            wplus = wplus.unsqueeze(1).expand(-1, self.n_latent, -1)
        if wplus.dim() != 3 or wplus.shape[1:] != (self.n_latent, self.config.style_dim):
            raise ValueError(f"W+ must have shape (n, {self.n_latent}, {self.config.style_dim}), got {tuple(wplus.shape)}")
        noise = [getattr(self.noises, f"noise_{k}") for k in range(self.config.num_layers)]
        x = self.input(wplus.shape[0])
        x = self.conv1(x, wplus[:, 0], noise[0])
        skip = self.to_rgb1(x, wplus[:, 1])
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * j](x, wplus[:, i], noise[2 * j + 1])
            x = self.convs[2 * j + 1](x, wplus[:, i + 1], noise[2 * j + 2])
            skip = to_rgb(x, wplus[:, i + 2], skip)
            i += 2
        return skip
