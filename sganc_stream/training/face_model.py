"""Train the face model: StyleGAN2 generator (GAN), pSp-style encoder, or both jointly as an autoencoder.

Three modes share one loop, one checkpoint format and one set of samples:

* ``gan`` — G (mapping + synthesis) against a residual D: non-saturating logistic loss, lazy R1 on reals,
  style mixing, DiffAugment on everything D sees, an EMA copy of G.
* ``encoder`` — pSp-style E for a frozen G: latent loss on generated images whose W+ is known, plus
  reconstruction (MSE + MS-SSIM) on real aligned faces, so that G(E(x)) ≈ x; ``latent_avg`` starts at G's mean w.
* ``joint`` — E and G's synthesis trained together on real faces (an adversarial-latent-autoencoder-style
  model): reconstruction, plus optional adversarial (``adv_weight``) and feature-matching (``fm_weight``) terms
  with the same D, R1 and DiffAugment. Switched on in a later chunk, D first trains alone (``d_warmup``), then
  G's adversarial weight ramps in (``adv_ramp``), optionally scaled by VQGAN's adaptive weight (``adv_adaptive``).
  The decoder stays a StyleGAN2 synthesis network driven by W+, loadable by the same generator code. On a CPU
  this is the mode that converges in an hour; a GAN needs GPU-days.

Mixed precision: on CUDA, float16 autocast + GradScaler around the step; on CPU, with ``bf16``, bfloat16 autocast
around the networks' forward passes only (joint mode), the losses computed in float32. Checkpoints hold every module, optimizer and the
loss history, so a run continues where it stopped (``resume``); ``max_minutes`` ends a chunk cleanly.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from pytorch_msssim import ms_ssim
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from sganc_stream.errors import InputError
from sganc_stream.fileio import atomic_output, write_bytes_atomic
from sganc_stream.metrics import LUMA_601, face_luma, ms_ssim_window
from sganc_stream.models.checkpoint import read_torch_file
from sganc_stream.models.fast_encoder import FastEncoder, FastEncoderConfig
from sganc_stream.models.stylegan2 import Generator, GeneratorConfig
from sganc_stream.training.augment import diff_augment, parse_policy
from sganc_stream.training.discriminator import Discriminator, PatchDiscriminator

if TYPE_CHECKING:
    from sganc_stream.training.identity import IdentityLoss

MODES = ("gan", "encoder", "joint")
D_ARCHS = ("stylegan2", "patchgan")
# What a conditional D sees besides the image: "none", or "lowpass", the real face pooled to LOWPASS_CELLS²
# cells (as the colour term) and enlarged back, stacked as 3 more channels.
D_CONDITIONS = ("none", "lowpass")
LOWPASS_CELLS = 16
CHECKPOINT = "checkpoint.pt"


@dataclass
class FaceModelConfig:
    """Architecture of the generator and encoder (v0's CPU layout: 64 px, every layer 64 channels).

    ``channel_base`` > 0 tapers the generator's widths toward high resolution (``GeneratorConfig.channel_base``).
    """

    size: int = 64
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 1
    channel_max: int = 64
    enc_base_channels: int = 32
    enc_max_channels: int = 256
    channel_base: int = 0
    enc_identity_dim: int = 0  # 128: the encoder also reads dlib's face descriptor of its input (FastEncoderConfig)

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                               channel_multiplier=self.channel_multiplier, channel_max=self.channel_max,
                               channel_base=self.channel_base)

    def encoder_config(self) -> FastEncoderConfig:
        return FastEncoderConfig(input_size=self.size, n_latent=self.generator_config().n_latent, width=self.style_dim,
                                 base_channels=self.enc_base_channels, max_channels=self.enc_max_channels,
                                 identity_dim=self.enc_identity_dim)


@dataclass
class TrainSettings:
    """Optimisation settings; ``steps``, ``max_minutes`` and ``lr_ramp_down`` may change between resumed chunks."""

    mode: str = "joint"
    steps: int = 4000
    batch: int = 16
    lr: float = 2e-3  # G (equalized learning rate), and D unless d_lr is set
    d_lr: float = 0.0  # D's learning rate (equalized layers); 0 = lr
    enc_lr: float = 1e-3
    ema_kimg: float = 5.0  # half-life of the EMA weights, in thousands of images
    augment: str = "color,translation,cutout"  # DiffAugment policy for what D sees
    r1_gamma: float = 0.1
    r1_every: int = 16
    mixing_prob: float = 0.9
    adv_weight: float = 0.0  # joint mode: weight of the non-saturating G loss on reconstructions
    d_warmup: int = 0  # joint: steps D trains alone after it is created (G's adversarial and FM weights are 0)
    adv_ramp: int = 0  # joint: steps after the warm-up over which those weights rise linearly to their values
    adv_adaptive: bool = False  # joint: scale adv_weight by VQGAN's λ = ‖∇rec‖ / ‖∇adv‖ at G's last layer
    fm_weight: float = 0.0  # joint: pix2pixHD feature matching, L1 between D's features of x and of G(E(x))
    d_crop: int = 0  # joint: D judges random full-resolution crops of this size (a patch D); 0 = whole images
    d_arch: str = "stylegan2"  # joint: "stylegan2" (residual, the generator's widths) or "patchgan" (pix2pix's)
    d_condition: str = "none"  # joint, patchgan: "lowpass" = D judges an image given the real face's low-pass
    mse_weight: float = 1.0
    colour_weight: float = 0.0  # joint / encoder: L1 of images pooled to 16x16 cells (colour and tone, not detail)
    msssim_weight: float = 1.0
    latent_weight: float = 1.0  # encoder mode: W+ MSE on generated images
    code_weight: float = 1e-4  # joint mode: mean square of E's W+ offsets (keeps W+ compact for the codec)
    identity_weight: float = 0.0  # joint / encoder: dlib face-descriptor distance between x and its reconstruction
    face_perceptual_weight: float = 0.0  # joint / encoder: LPIPS-style distance of dlib's network's stage features
    temporal_weight: float = 0.0  # joint: mean |E(x_t) − E(x_t+1)| on consecutive clip frames (few inter bits)
    delta_weight: float = 0.0  # joint: e4e's delta regularisation, mean square of W+ rows' offsets from row 0
    pair_fraction: float = 0.0  # share of each batch drawn as consecutive clip-frame pairs (for temporal_weight)
    geometric: float = 0.0  # probability of a small random shift / scale / rotation of a training face
    tone_balance: float = 0.0  # exponent α of skin-tone-balanced sampling: P(face) ∝ n_bin^-α (0 uniform, 1 flat)
    photometric: float = 0.0  # probability of a random exposure / contrast / saturation / white-balance change
    face_tone: float = 0.0  # probability of a random exposure change of the face region only (background kept)
    photo_share: float = 0.0  # share of single-face draws that are photos, not clip frames (0: the data's own mix)
    lr_ramp_down: float = 0.0  # last share of ``steps`` over which learning rates fall linearly to 10 %
    flip: bool = True
    seed: int = 0
    amp: bool = True  # CUDA only
    bf16: bool = False  # CPU, joint mode: E, G and dlib's network run under bfloat16 autocast; every loss in float32
    sample_every: int = 250
    checkpoint_every: int = 250
    max_minutes: float = 0.0  # 0 = no limit

    def check(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.steps < 1 or self.batch < 2:
            raise InputError("steps must be >= 1 and batch >= 2")
        if not all(0.0 <= v <= 1.0 for v in (self.pair_fraction, self.geometric, self.tone_balance, self.photometric,
                                             self.face_tone, self.photo_share)):
            raise InputError("pair fraction, geometric, photometric and face-tone augmentation probabilities, tone "
                             "balance and photo share must lie in [0, 1]")
        if min(self.identity_weight, self.face_perceptual_weight, self.temporal_weight, self.delta_weight,
               self.adv_weight, self.fm_weight, self.colour_weight) < 0:
            raise InputError("loss weights must be >= 0")
        if min(self.d_lr, self.d_warmup, self.adv_ramp) < 0:
            raise InputError("D learning rate, D warm-up and adversarial ramp must be >= 0")
        if self.d_arch not in D_ARCHS:
            raise InputError(f"D architecture must be one of {', '.join(D_ARCHS)}, got {self.d_arch!r}")
        if self.d_condition not in D_CONDITIONS:
            raise InputError(f"D condition must be one of {', '.join(D_CONDITIONS)}, got {self.d_condition!r}")
        if self.d_condition != "none" and self.d_arch != "patchgan":
            raise InputError(f"a conditional D (--d-condition {self.d_condition}) needs --d-arch patchgan, got "
                             f"{self.d_arch}")
        if self.d_condition != "none" and "color" in parse_policy(self.augment):
            raise InputError(f"a conditional D (--d-condition {self.d_condition}) needs an --augment policy without "
                             f"color (it would change the image apart from its condition), got {self.augment!r}; "
                             "e.g. --augment none or translation,cutout")
        if self.d_crop and (self.d_crop < 8 or self.d_crop & (self.d_crop - 1)):
            raise InputError(f"D crop must be 0 (whole images) or a power of two >= 8, got {self.d_crop}")
        try:
            parse_policy(self.augment)
        except ValueError as exc:
            raise InputError(str(exc)) from None


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w, 3) → float (n, 3, h, w) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (n, 3, h, w) in [-1, 1] → uint8 (n, h, w, 3)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, mse_weight: float, msssim_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, MSE, MS-SSIM) in [-1, 1] image space; MS-SSIM uses the metrics module's window for the size."""
    mse = F.mse_loss(x_hat.float(), x.float())
    win = ms_ssim_window(*x.shape[-2:])
    sim = ms_ssim((x_hat.float() + 1) / 2, (x.float() + 1) / 2, data_range=1.0, win_size=win)
    return mse_weight * mse + msssim_weight * (1 - sim), mse, sim


def colour_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """DPED's colour loss (Ignatov et al. 2017, §3.1.2: distance of blurred images, blind to texture and detail),
    here mean |·| of both (n, 3, s, s) images average-pooled to 16 × 16 cells: a shift of skin tone, saturation or
    white balance costs as much as it covers, whatever the sharper terms do. A scalar."""
    k = max(x.shape[-1] // 16, 1)
    return F.l1_loss(F.avg_pool2d(x_hat.float(), k), F.avg_pool2d(x.float(), k))


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def feature_matching(d: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's feature-matching loss (Wang et al. 2018, eq. 4): mean over D's blocks of the mean absolute
    difference between D's features of ``fake`` and of its paired ``real`` (both (n, 3, s, s); no augmentation, so
    the pairs stay aligned; the real features carry no gradient). A scalar."""
    _, real_feats = d(real.detach(), features=True)
    _, fake_feats = d(fake, features=True)
    return torch.stack([(f.float() - r.detach().float()).abs().mean() for f, r in zip(fake_feats, real_feats)]).mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's adaptive adversarial weight (Esser et al. 2021, eq. 7): λ = ‖∇_L rec_loss‖ / (‖∇_L adv_loss‖ + 1e-4)
    at G's last layer's weight L, clamped to [0, ``max_weight``], without gradient. Scaled by it, the adversarial
    gradient entering G has ``adv_weight`` times the size of the reconstruction one, however large D's logits grow."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def random_crops(x: torch.Tensor, size: int, gen: torch.Generator, *, like: torch.Tensor | None = None
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One random ``size`` × ``size`` window per image of ``x`` (n, c, h, w), uniform over positions (seeded by
    ``gen``); with ``like`` (same shape as ``x``) also the same windows of it, for losses that compare pairs. A
    ``size`` of 0 (``d_crop``'s "whole images") or at least the image's side leaves the images as they are."""
    n, _, h, w = x.shape
    if size <= 0 or size >= min(h, w):
        return x if like is None else (x, like)
    top = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    left = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    crop = lambda t: torch.stack([t[i, :, a:a + size, b:b + size] for i, (a, b) in enumerate(zip(top, left))])
    return crop(x) if like is None else (crop(x), crop(like))


def lowpass(x: torch.Tensor, cells: int = LOWPASS_CELLS) -> torch.Tensor:
    """Images ``(n, c, h, w)`` averaged over ``cells`` × ``cells`` cells and enlarged back bilinearly: their tone
    and colour without detail (what the colour term compares); same shape and dtype."""
    return F.interpolate(F.adaptive_avg_pool2d(x, cells), size=x.shape[-2:], mode="bilinear", align_corners=False)


def r1_penalty(d: nn.Module, real: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Σ‖∇ₓ D(x)‖² per real image, averaged (on the augmented reals, as StyleGAN2-ADA does)."""
    real = real.detach().requires_grad_(True)
    logits = d(diff_augment(real, policy))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def random_geometry(x: torch.Tensor, prob: float, gen: torch.Generator | None = None, *, pairs: int = 0,
                    shift: float = 0.04, scale: float = 0.05, degrees: float = 4.0) -> torch.Tensor:
    """Small random similarity transforms of aligned faces ``(n, 3, s, s)``, as alignment jitter delivers them.

    Each image is moved with probability ``prob`` by up to ±``shift`` (a fraction of the half side), scaled by
    1 ± ``scale`` and turned by ±``degrees``; borders are reflected. Input and target of the autoencoder both get
    the moved face, so E learns to read, and G to draw, slightly misplaced crops. Images ``[pairs:2*pairs]`` get
    the same transform as ``[:pairs]`` (consecutive frames of one clip stay consecutive).
    """
    n = x.shape[0]
    if prob <= 0:
        return x
    u = torch.rand(n, 5, generator=gen).to(x.device) * 2 - 1
    on = (torch.rand(n, generator=gen).to(x.device) < prob).to(x.dtype)
    if pairs:
        u[pairs:2 * pairs], on[pairs:2 * pairs] = u[:pairs], on[:pairs]
    angle = torch.deg2rad(u[:, 0] * degrees) * on
    zoom = 1 + u[:, 1] * scale * on
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift * on], 1),
                         torch.stack([sin, cos, u[:, 3] * shift * on], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# Ranges of random_photometric, as natural-log factors: exposure reaches darker than brighter (the data holds few
# dark faces; brightening a well-lit face clips it), contrast and saturation both ways, white balance a little.
EXPOSURE_LOG = (-0.7, 0.2)
CONTRAST_LOG = 0.25
SATURATION_LOG = 0.3
WHITE_BALANCE_LOG = 0.08


def random_photometric(x: torch.Tensor, prob: float, gen: torch.Generator | None = None, *,
                       pairs: int = 0) -> torch.Tensor:
    """Random exposure, contrast, saturation and white balance of faces ``(n, 3, s, s)`` in [−1, 1], as cameras
    and lighting deliver them; float, same shape, clipped to [−1, 1].

    Each image changes with probability ``prob``; in linear [0, 1] RGB it is scaled by an exposure gain
    exp(U(EXPOSURE_LOG)) and per-channel white-balance gains exp(±WHITE_BALANCE_LOG), then contrast is scaled about
    its mean grey and saturation about its Rec. 601 luma (the colour jitter of Howard 2013, "Some improvements on
    deep convolutional neural network based image classification", and torchvision's ``ColorJitter``). Input and
    target of the autoencoder both get the changed face: E must carry the exposure and tone through W+, so faces
    darker than most of the data are no longer pulled toward its mean. Images ``[pairs:2*pairs]`` get the same change
    as ``[:pairs]`` (consecutive frames of one clip stay consecutive).
    """
    n = x.shape[0]
    if prob <= 0:
        return x
    u = torch.rand(n, 6, generator=gen).to(x.device, x.dtype)
    on = (torch.rand(n, generator=gen).to(x.device) < prob).to(x.dtype)
    if pairs:
        u[pairs:2 * pairs], on[pairs:2 * pairs] = u[:pairs], on[:pairs]
    lo, hi = EXPOSURE_LOG
    exposure = torch.exp((lo + (hi - lo) * u[:, 0]) * on)
    contrast = torch.exp((2 * u[:, 1] - 1) * CONTRAST_LOG * on)
    saturation = torch.exp((2 * u[:, 2] - 1) * SATURATION_LOG * on)
    balance = torch.exp((2 * u[:, 3:6] - 1) * WHITE_BALANCE_LOG * on[:, None])
    luma = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device)[None, :, None, None]
    y = (x + 1) * 0.5 * (exposure[:, None] * balance)[:, :, None, None]
    mean_grey = (y * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    y = mean_grey + contrast[:, None, None, None] * (y - mean_grey)
    grey = (y * luma).sum(1, keepdim=True)
    y = grey + saturation[:, None, None, None] * (y - grey)
    return (y.clamp(0, 1) * 2 - 1)


# random_face_tone: the face region's exposure range (natural-log factor), mostly darker, and the region itself,
# an ellipse in crop coordinates (centre x, y; semi-axes x, y) around the skin of an FFHQ-aligned face, whose gain
# fades to nothing between FACE_FADE[0] and FACE_FADE[1] times its radius.
FACE_TONE_LOG = (-1.2, 0.2)
FACE_ELLIPSE = (0.5, 0.56, 0.25, 0.32)
FACE_FADE = (0.75, 1.25)


def face_region_mask(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Soft mask (size, size) of the face region of an FFHQ-aligned crop: 1 on the skin, 0 on the background,
    fading linearly in between (``FACE_ELLIPSE``, ``FACE_FADE``)."""
    cx, cy, ax, ay = FACE_ELLIPSE
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    r = (((t[None, :] - cx) / ax) ** 2 + ((t[:, None] - cy) / ay) ** 2).sqrt()
    lo, hi = FACE_FADE
    return ((hi - r) / (hi - lo)).clamp(0, 1).to(dtype)


def random_face_tone(x: torch.Tensor, prob: float, gen: torch.Generator | None = None, *,
                     pairs: int = 0) -> torch.Tensor:
    """Random exposure of the face region only, background kept, of faces ``(n, 3, s, s)`` in [−1, 1]; float, same
    shape, clipped to [−1, 1].

    Each image changes with probability ``prob``: in [0, 1] RGB its face region (``face_region_mask``) is scaled by a
    gain exp(U(FACE_TONE_LOG)), fading to 1 on the background. Global exposure (``random_photometric``) keeps a dark
    face on a bright wall rare, and there the model lightened the skin toward the data's mean; this makes such
    faces, as skin-tone augmentation does for face analysis. Images ``[pairs:2*pairs]`` get the same change as
    ``[:pairs]``.
    """
    n = x.shape[0]
    if prob <= 0:
        return x
    u = torch.rand(n, generator=gen).to(x.device, x.dtype)
    on = (torch.rand(n, generator=gen).to(x.device) < prob).to(x.dtype)
    if pairs:
        u[pairs:2 * pairs], on[pairs:2 * pairs] = u[:pairs], on[:pairs]
    lo, hi = FACE_TONE_LOG
    gain = torch.exp((lo + (hi - lo) * u) * on)
    mask = face_region_mask(x.shape[-1], x.dtype).to(x.device)
    y = (x + 1) * 0.5 * (1 + (gain[:, None, None, None] - 1) * mask)
    return y.clamp(0, 1) * 2 - 1


def set_memory_format(module: nn.Module | None, memory_format: torch.memory_format) -> None:
    """Lay out ``module``'s 4-D parameters (convolution weights) in ``memory_format``, in place; others stay."""
    if module is None:
        return
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=memory_format)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - beta)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


@torch.no_grad()
def mean_w(g: Generator, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean mapping output (style_dim,): the start of pSp's ``latent_avg``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, g.config.style_dim, generator=gen).to(next(g.parameters()).device)
    return g.mapping(z).mean(0)


def sample_wplus(g: Generator, n: int, mixing_prob: float, device: torch.device) -> torch.Tensor:
    """W+ with style mixing: two w's split at a random row for a ``mixing_prob`` share of samples."""
    rows, dim = g.n_latent, g.config.style_dim
    w1 = g.mapping(torch.randn(n, dim, device=device))
    w2 = g.mapping(torch.randn(n, dim, device=device))
    cut = torch.randint(1, rows, (n, 1, 1), device=device)
    cut = torch.where(torch.rand(n, 1, 1, device=device) < mixing_prob, cut, torch.full_like(cut, rows))
    take_first = torch.arange(rows, device=device).view(1, -1, 1) < cut
    return torch.where(take_first, w1[:, None], w2[:, None])


class FaceModelTrainer:
    """Modules, optimizers, EMA copies and one ``step()`` for the chosen mode."""

    def __init__(self, arch: FaceModelConfig, settings: TrainSettings, device: str = "cpu",
                 generator: Generator | None = None) -> None:
        settings.check()
        self.arch, self.s = arch, settings
        self.device = torch.device(device)
        self.amp = settings.amp and self.device.type == "cuda"
        self.policy = parse_policy(settings.augment)
        torch.manual_seed(settings.seed)
        gcfg = arch.generator_config()
        self.g = (generator if generator is not None else Generator(gcfg)).to(self.device).train()
        if self.g.config != gcfg:
            raise InputError(f"the given generator's layout {self.g.config} differs from the architecture {gcfg}")
        self.e = FastEncoder(arch.encoder_config()).to(self.device).train() if settings.mode != "gan" else None
        if settings.d_crop > arch.size:
            raise InputError(f"D crop {settings.d_crop} is larger than the {arch.size} px images")
        self.d: nn.Module | None = None
        if self.uses_d:
            conditional = settings.d_condition != "none"
            self.d = (PatchDiscriminator(in_channels=6 if conditional else 3) if settings.d_arch == "patchgan" else
                      Discriminator(gcfg, input_size=settings.d_crop or None)).to(self.device).train()
        self.crop_gen = torch.Generator().manual_seed(settings.seed + 7)  # where the patch D looks (d_crop)
        betas_g = (0.0, 0.99) if settings.mode == "gan" else (0.9, 0.99)
        self.opts: dict[str, torch.optim.Optimizer] = {}
        if settings.mode in ("gan", "joint"):
            params = self.g.parameters() if settings.mode == "gan" else (p for n, p in self.g.named_parameters() if not n.startswith("style."))
            self.opts["g"] = torch.optim.Adam(params, lr=settings.lr, betas=betas_g)
        else:
            self.g.requires_grad_(False).eval()
        if self.e is not None:
            if settings.mode == "encoder":
                self.e.latent_avg.copy_(mean_w(self.g).expand_as(self.e.latent_avg))
            self.opts["e"] = torch.optim.Adam(self.e.parameters(), lr=settings.enc_lr, betas=(0.9, 0.99))
        if self.d is not None:
            c = settings.r1_every / (settings.r1_every + 1)  # lazy-regularisation correction of StyleGAN2
            self.opts["d"] = torch.optim.Adam(self.d.parameters(), lr=(settings.d_lr or settings.lr) * c,
                                              betas=(0.0 ** c, 0.99 ** c))
        self.base_lrs = {k: [pg["lr"] for pg in o.param_groups] for k, o in self.opts.items()}
        self.scalers = {k: torch.amp.GradScaler("cuda", enabled=self.amp) for k in self.opts}
        if settings.mode == "joint":
            self.scalers["e"] = self.scalers["g"]  # one backward through E and G: one loss scale
        self.identity: IdentityLoss | None = None
        if max(settings.identity_weight, settings.face_perceptual_weight) > 0 and settings.mode != "gan":
            from sganc_stream.training.identity import IdentityLoss

            self.identity = IdentityLoss().to(self.device)
        # Channels-last convolution weights and batches: the same numbers, 14–17 % less CPU per step on this CPU
        # (benchmarks/train_step_speed.py). G's modulated convolutions keep their 5-D weights.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            for module in (self.g, self.e, self.d):
                set_memory_format(module, torch.channels_last)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False) if "g" in self.opts else None
        self.e_ema = copy.deepcopy(self.e).eval().requires_grad_(False) if self.e is not None else None
        self.ema_beta = 0.5 ** (settings.batch / max(settings.ema_kimg * 1000.0, 1e-8))
        self.step_count = 0
        self.d_start = 0  # step at which D was created (a later chunk may add it): its warm-up counts from here
        self.cpu_seconds = 0.0  # process CPU time spent in step(), all chunks together
        self.history: list[dict[str, float]] = []
        self.init_from = ""  # the model whose weights started this run (start_from), kept across chunks

    @property
    def uses_d(self) -> bool:
        return self.s.mode == "gan" or (self.s.mode == "joint" and max(self.s.adv_weight, self.s.fm_weight) > 0)

    def adv_ramp_factor(self) -> float:
        """Share of ``adv_weight`` / ``fm_weight`` that G gets at the coming step: 0 for the ``d_warmup`` steps after
        D was created (D trains alone against the current reconstructions), then linear up to 1 over ``adv_ramp``
        steps."""
        k = self.step_count - self.d_start - self.s.d_warmup
        if k < 0:
            return 0.0
        return min(1.0, (k + 1) / self.s.adv_ramp) if self.s.adv_ramp > 0 else 1.0

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def _networks(self):
        """Where the networks' forward passes run in joint mode: CPU bfloat16 autocast with ``bf16`` (AVX512-BF16;
        the losses are computed from float32 copies of their outputs, outside it); no-op otherwise."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.s.bf16 and self.device.type == "cpu")

    def _backward(self, name: str, loss: torch.Tensor) -> None:
        self.scalers[name].scale(loss).backward()

    def _set_lr(self) -> None:
        """Linear ramp-down over the last ``lr_ramp_down`` share of the steps: a cheap way to settle the weights."""
        ramp = self.s.lr_ramp_down * self.s.steps
        left = self.s.steps - self.step_count
        factor = 1.0 if ramp <= 0 or left >= ramp else 0.1 + 0.9 * max(left, 0) / ramp
        for k, o in self.opts.items():
            for pg, base in zip(o.param_groups, self.base_lrs[k]):
                pg["lr"] = base * factor

    def _apply(self, *names: str) -> None:
        for n in names:
            self.scalers[n].step(self.opts[n])
        for scaler in {id(self.scalers[n]): self.scalers[n] for n in names}.values():
            scaler.update()

    def _zero(self, *names: str) -> None:
        for n in names:
            self.opts[n].zero_grad(set_to_none=True)

    @staticmethod
    def _colour(rec: torch.Tensor, real: torch.Tensor, out: dict[str, float]) -> torch.Tensor:
        colour = colour_loss(rec, real)
        out["colour"] = colour.item()
        return colour

    def _identity_terms(self, rec: torch.Tensor, real: torch.Tensor, out: dict[str, float],
                        real_features: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Weighted dlib identity distance + face-perceptual distance of reconstructions (logged into ``out``)."""
        assert self.identity is not None
        with self._networks():
            terms = self.identity.compare(rec, real, real_features)
        distance, perceptual = terms.distance.mean(), terms.perceptual.mean()
        out.update(identity=distance.item(), face_perceptual=perceptual.item())
        return self.s.identity_weight * distance + self.s.face_perceptual_weight * perceptual

    def _conditioned(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Images ``x`` (n, 3, h, w) as a conditional D takes them: stacked with :func:`lowpass` of the real faces
        ``real`` they reconstruct (n, 6, h, w); ``x`` itself for an unconditional D."""
        return x if self.s.d_condition == "none" else torch.cat([x, lowpass(real)], 1)

    def _crops(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """What D sees of images ``x`` that reconstruct ``real``: themselves (with their condition), or random crops
        of ``d_crop`` px (a patch D)."""
        return random_crops(self._conditioned(x, real), self.s.d_crop, self.crop_gen)  # type: ignore[return-value]

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """One D step on real faces and their reconstructions ``fake`` (same order: a conditional D pairs them)."""
        assert self.d is not None
        self._zero("d")
        real, fake = self._crops(real, real), self._crops(fake.detach(), real)
        with self._autocast():
            real_logits = self.d(diff_augment(real, self.policy))
            fake_logits = self.d(diff_augment(fake.detach(), self.policy))
            loss = d_logistic(real_logits, fake_logits)
        self._backward("d", loss)
        out = {"d": loss.item(), "d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item()}
        if self.step_count % self.s.r1_every == 0:
            r1 = r1_penalty(self.d, real, self.policy)
            self._backward("d", self.s.r1_gamma / 2 * r1 * self.s.r1_every)
            out["r1"] = r1.item()
        self._apply("d")
        return out

    def step(self, real: torch.Tensor, pairs: int = 0) -> dict[str, float]:
        """One optimisation step on a batch of real images (n, 3, size, size) in [-1, 1]; returns its losses.

        With ``pairs`` = m > 0 (joint mode), ``real[:m]`` and ``real[m:2m]`` are consecutive frames of the same
        clips, for the temporal term.
        """
        cpu_start = time.process_time()
        real = real.to(self.device, non_blocking=True)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        mode, s = self.s.mode, self.s
        self._set_lr()
        out: dict[str, float] = {}
        if mode == "gan":
            with torch.no_grad(), self._autocast():
                fake = self.g(sample_wplus(self.g, len(real), s.mixing_prob, self.device))
            out.update(self._d_step(real, fake))
            self.d.requires_grad_(False)
            self._zero("g")
            with self._autocast():
                loss = g_nonsaturating(self.d(diff_augment(self.g(sample_wplus(self.g, len(real), s.mixing_prob, self.device)), self.policy)))
            self._backward("g", loss)
            self._apply("g")
            self.d.requires_grad_(True)
            out["g"] = loss.item()
        elif mode == "encoder":
            assert self.e is not None
            half = max(len(real) // 2, 1)
            with torch.no_grad():
                w_known = sample_wplus(self.g, half, s.mixing_prob, self.device)
                synth = self.g(w_known)
            self._zero("e")
            with self._autocast():
                w_pred = self.e(torch.cat([synth, real]))
                rec = self.g(w_pred[half:])
                latent = F.mse_loss(w_pred[:half].float(), w_known)
                rloss, mse, sim = reconstruction_loss(rec, real, s.mse_weight, s.msssim_weight)
                if s.colour_weight > 0:
                    rloss = rloss + s.colour_weight * self._colour(rec, real, out)
                loss = s.latent_weight * latent + rloss
                if self.identity is not None:
                    loss = loss + self._identity_terms(rec, real, out)
            self._backward("e", loss)
            self._apply("e")
            out.update(loss=loss.item(), latent=latent.item(), mse=mse.item(), msssim=sim.item())
        else:
            assert self.e is not None
            names = ("g", "e")
            self._zero(*names)
            if self.d is not None:
                self.d.requires_grad_(False)
            real_features = None  # dlib's view of the real faces: the identity terms' targets and E's descriptor input
            if self.identity is not None:
                with torch.no_grad(), self._networks():
                    real_features = self.identity.features(real)
            with self._autocast():
                with self._networks():
                    codes = self.e.codes(real, identity=real_features[0] if real_features is not None else None)
                    rec = self.g(codes + self.e.latent_avg)
                codes, rec = codes.float(), rec.float()
                rloss, mse, sim = reconstruction_loss(rec, real, s.mse_weight, s.msssim_weight)
                if s.colour_weight > 0:
                    rloss = rloss + s.colour_weight * self._colour(rec, real, out)
                if self.identity is not None:
                    rloss = rloss + self._identity_terms(rec, real, out, real_features)
                loss = rloss + s.code_weight * codes.square().mean()
                if pairs > 0 and s.temporal_weight > 0:
                    temporal = (codes[:pairs] - codes[pairs:2 * pairs]).abs().mean()
                    loss = loss + s.temporal_weight * temporal
                    out["temporal"] = temporal.item()
                if s.delta_weight > 0:
                    delta = (codes[:, 1:] - codes[:, :1]).square().mean()
                    loss = loss + s.delta_weight * delta
                    out["delta"] = delta.item()
                ramp = self.adv_ramp_factor() if self.d is not None else 0.0
                if ramp > 0 and s.adv_weight > 0:
                    adv = g_nonsaturating(self.d(diff_augment(self._crops(rec, real), self.policy)))
                    weight = s.adv_weight * ramp
                    if s.adv_adaptive:
                        lam = adaptive_weight(rloss, adv, self.g.to_rgbs[-1].conv.weight)
                        weight = weight * lam
                        out["adv_lambda"] = lam.item()
                    loss = loss + weight * adv
                    out.update(adv=adv.item(), adv_weight=float(weight))
                if ramp > 0 and s.fm_weight > 0:
                    fm = feature_matching(self.d, *random_crops(self._conditioned(rec, real), s.d_crop,
                                                                self.crop_gen, like=self._conditioned(real, real)))
                    loss = loss + s.fm_weight * ramp * fm
                    out["fm"] = fm.item()
            self._backward("g", loss)
            self._apply(*names)
            out.update(loss=loss.item(), mse=mse.item(), msssim=sim.item())
            if self.d is not None:
                self.d.requires_grad_(True)
                out.update(self._d_step(real, rec))
        if self.g_ema is not None and "g" in self.opts:
            ema_update(self.g_ema, self.g, self.ema_beta)
        if self.e_ema is not None:
            ema_update(self.e_ema, self.e, self.ema_beta)
        self.step_count += 1
        self.cpu_seconds += time.process_time() - cpu_start
        return out

    def start_from(self, g: Generator, e: nn.Module, source: str) -> None:
        """Start joint training from a trained G and E (a bundle's or another run's weights, e.g. when a run's
        checkpoints are lost): both and their EMA copies take those weights; optimizers, discriminator, step count
        and CPU time start afresh. ``source`` names the model in the checkpoint (``init_from``). InputError outside
        joint mode, or for a G or E of another layout than this run's architecture."""
        if self.s.mode != "joint" or self.e is None or self.g_ema is None or self.e_ema is None:
            raise InputError(f"--init starts joint training from a model's G and E; mode {self.s.mode!r} cannot use it")
        if g.config != self.g.config:
            raise InputError(f"{source}: its generator {g.config} differs from this run's {self.g.config} "
                             "(match --channel-base, --channel-max and --n-mlp to it)")
        if not isinstance(e, FastEncoder) or e.config != self.e.config:
            raise InputError(f"{source}: its encoder {getattr(e, 'config', type(e).__name__)} differs from this run's "
                             f"{self.e.config} (match --enc-channels and --enc-identity to it)")
        for target, weights in ((self.g, g), (self.g_ema, g), (self.e, e), (self.e_ema, e)):
            target.load_state_dict(weights.state_dict())
        self.init_from = source

    # ------------------------------------------------------------------------------------------------
    def exported(self, ema: bool = True) -> tuple[Generator, FastEncoder | None]:
        """The EMA (or, with ``ema=False``, the raw) generator and encoder in eval mode, as a bundle stores them.

        Short runs may prefer the raw weights: early on, E and G drift together faster than the EMA follows.
        """
        g = copy.deepcopy(self.g_ema if ema and self.g_ema is not None else self.g).eval()
        e = copy.deepcopy(self.e_ema if ema else self.e)
        for module in (g, e):
            set_memory_format(module, torch.contiguous_format)  # what safetensors and the runtime expect
        return g, (e.eval() if e is not None else None)

    def state(self) -> dict:
        modules = {"g": self.g, "e": self.e, "d": self.d, "g_ema": self.g_ema, "e_ema": self.e_ema}
        return {
            "modules": {k: m.state_dict() for k, m in modules.items() if m is not None},
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "scalers": {k: sc.state_dict() for k, sc in self.scalers.items()},
            "step": self.step_count,
            "d_start": self.d_start,
            "cpu_seconds": self.cpu_seconds,
            "init_from": self.init_from,
            "history": json.dumps(self.history),
            "arch": json.dumps(asdict(self.arch), sort_keys=True),
            "settings": json.dumps(_fixed_settings(self.s), sort_keys=True),
        }

    def load_state(self, state: dict, path: Path, new_discriminator: bool = False) -> None:
        """Continue the run saved in ``state`` (read from ``path``); ``new_discriminator`` drops its D, D optimizer
        and D loss scaler, so D starts afresh (another ``--d-arch`` / ``--d-crop`` / ``--d-condition``) and its
        warm-up counts from now. InputError for another architecture, fixed settings or D layout."""
        if new_discriminator:
            state = {**state, **{k: {n: v for n, v in state[k].items() if n != "d"}
                                 for k in ("modules", "opts", "scalers") if k in state}}
        if _saved_arch(state) != self.arch:
            raise InputError(f"{path}: checkpoint has another architecture ({state['arch']}); remove it or drop --resume")
        if _fixed_settings(TrainSettings(**_known(json.loads(state["settings"])))) != _fixed_settings(self.s):
            raise InputError(f"{path}: checkpoint was made with other settings; only the length, schedule and loss "
                             f"weights ({', '.join(CHUNK_SETTINGS)}) may change on resume")
        # A module or optimizer the checkpoint lacks (a discriminator switched on in a later chunk) starts fresh.
        if self.d is not None and "d" in state["modules"]:
            saved = {k: tuple(v.shape) for k, v in state["modules"]["d"].items()}
            if saved != {k: tuple(v.shape) for k, v in self.d.state_dict().items()}:
                raise InputError(f"{path}: its discriminator has another layout than --d-arch {self.s.d_arch} "
                                 f"--d-crop {self.s.d_crop} --d-condition {self.s.d_condition} need (resume with "
                                 "the run's, or pass --new-discriminator to start D afresh)")
        modules = {"g": self.g, "e": self.e, "d": self.d, "g_ema": self.g_ema, "e_ema": self.e_ema}
        for k, m in modules.items():
            if m is not None and k in state["modules"]:
                m.load_state_dict(state["modules"][k])
        for k, o in self.opts.items():
            if k in state["opts"]:
                o.load_state_dict(state["opts"][k])
        for k, sc in self.scalers.items():
            if k in state["scalers"]:
                sc.load_state_dict(state["scalers"][k])
        self.step_count = int(state["step"])
        # D's warm-up counts from when D was created: now, if this chunk adds it.
        self.d_start = int(state.get("d_start", 0)) if "d" in state["modules"] else self.step_count
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.init_from = str(state.get("init_from", ""))
        self.history = json.loads(state["history"])


def _saved_arch(state: dict) -> FaceModelConfig:
    """A checkpoint's architecture; fields it predates take their defaults (what older runs used)."""
    try:
        return FaceModelConfig(**json.loads(state["arch"]))
    except TypeError as exc:
        raise InputError(f"checkpoint architecture not understood by this version ({exc})") from None


def _known(saved: dict) -> dict:
    """Saved settings minus fields this version no longer has (their defaults were all that older runs used)."""
    return {k: v for k, v in saved.items() if k in TrainSettings.__dataclass_fields__}


# Settings a resumed chunk may change: its length and schedule, and the loss recipe (terms switched on later).
CHUNK_SETTINGS = ("steps", "max_minutes", "sample_every", "checkpoint_every", "lr_ramp_down", "adv_weight",
                  "d_crop", "d_arch", "d_condition", "d_lr", "d_warmup", "adv_ramp", "adv_adaptive", "fm_weight", "r1_gamma", "augment",
                  "identity_weight", "face_perceptual_weight", "temporal_weight", "delta_weight", "pair_fraction", "geometric", "tone_balance", "photometric", "face_tone", "photo_share",
                  "mse_weight", "colour_weight", "msssim_weight", "code_weight", "bf16")


def _fixed_settings(s: TrainSettings) -> dict:
    return {k: v for k, v in asdict(s).items() if k not in CHUNK_SETTINGS}


def save_checkpoint(trainer: FaceModelTrainer, path: Path) -> None:
    """Atomic: a killed run leaves the previous checkpoint intact."""
    with atomic_output(path) as tmp:
        torch.save(trainer.state(), tmp)


def load_trainer(path: str | Path, device: str = "cpu", **chunk: object) -> FaceModelTrainer:
    """Rebuild a trainer (models, optimizers, history) from a checkpoint alone; ``chunk`` sets loss weights and other
    settings a resumed chunk may change (``CHUNK_SETTINGS``; others must equal the checkpoint's: InputError)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such training checkpoint")
    state = read_torch_file(path, keys=("arch", "settings", "modules"), what="train-face-model checkpoint")
    arch = _saved_arch(state)
    settings = TrainSettings(**{**_known(json.loads(state["settings"])), **chunk})
    trainer = FaceModelTrainer(arch, settings, device)
    trainer.load_state(state, path)
    return trainer


def write_grid(path: Path, rows: list[np.ndarray]) -> None:
    """PNG with one row per uint8 (n, h, w, 3) batch."""
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def sample_rows(trainer: FaceModelTrainer, shown: torch.Tensor) -> list[np.ndarray]:
    """Generated samples (gan) or inputs and EMA reconstructions (encoder, joint)."""
    g, e = trainer.exported()
    shown = shown.to(trainer.device)
    if e is None:
        gen = torch.Generator().manual_seed(1)
        z = torch.randn(2 * len(shown), g.config.style_dim, generator=gen).to(trainer.device)
        imgs = to_uint8(g(g.mapping(z)))
        return [imgs[: len(shown)], imgs[len(shown):]]
    return [to_uint8(shown), to_uint8(g(e(shown)))]


TONE_BIN = 16.0  # width of a skin-tone bin of tone-balanced sampling, in luma Y' levels (0–255)


def tone_balanced_probabilities(images: np.ndarray, alpha: float, chunk: int = 2048) -> np.ndarray | None:
    """Sampling probabilities, float64 (n,) summing to 1, for uint8 (n, s, s, 3) aligned faces: each face's skin
    tone is the luma of its central skin box (``metrics.face_luma``), binned by ``TONE_BIN`` levels, and
    P(face) ∝ (faces in its bin)^−α. α = 0.5 is square-root sampling (Mahajan et al. 2018, "Exploring the limits of weakly supervised pretraining": the middle way
    between the data's frequencies and a flat histogram, α = 1): tones the data holds few of, dark skin here, are
    drawn more often, so a loss averaged over batches no longer pays off in regressing them to the data's mean. None
    for α = 0 (uniform: the caller draws as before)."""
    if alpha <= 0:
        return None
    luma = np.concatenate([np.atleast_1d(face_luma(images[i:i + chunk])) for i in range(0, len(images), chunk)])
    bins = np.minimum((luma // TONE_BIN).astype(np.int64), int(255 // TONE_BIN))
    counts = np.bincount(bins)
    weights = counts[bins].astype(np.float64) ** -alpha
    return weights / weights.sum()


def photo_share_probabilities(probabilities: np.ndarray | None, is_photo: np.ndarray, share: float) -> np.ndarray | None:
    """Sampling probabilities, float64 (n,) summing to 1, that give photos (``is_photo``, bool (n,)) the total mass
    ``share`` and clip frames the rest, keeping ``probabilities``' proportions within each kind (uniform when None).
    Clip frames come many to a person, photos one: a larger share of photos puts more distinct people in every batch.
    ``probabilities`` unchanged for share 0, or when the data holds only one kind."""
    if share <= 0 or is_photo.all() or not is_photo.any():
        return probabilities
    p = np.full(len(is_photo), 1.0 / len(is_photo)) if probabilities is None else probabilities.astype(np.float64)
    out = np.where(is_photo, p * share / p[is_photo].sum(), p * (1 - share) / p[~is_photo].sum())
    return out / out.sum()


def train_face_model(images: np.ndarray, out_dir: str | Path, arch: FaceModelConfig, settings: TrainSettings, *,
                     device: str = "cpu", resume: bool = False, generator: Generator | None = None,
                     preview: np.ndarray | None = None, pairs: np.ndarray | None = None,
                     is_photo: np.ndarray | None = None,
                     progress: bool = True, new_discriminator: bool = False,
                     init: tuple[Generator, nn.Module, str] | None = None) -> FaceModelTrainer:
    """Train on uint8 (n, size, size, 3) aligned faces; checkpoints, samples and ``log.jsonl`` go to ``out_dir``.

    ``generator`` is the frozen G of encoder mode; ``preview`` (uint8 faces, e.g. validation ones) is what the
    sample grids show; ``pairs`` (k, 2) int64 are rows of ``images`` that are consecutive frames of one clip (the
    temporal term's data); ``is_photo`` (bool (n,)) marks photos, for ``settings.photo_share``. With ``resume`` an existing checkpoint is continued (same architecture; the chunk
    settings in ``CHUNK_SETTINGS`` may change; ``new_discriminator`` starts D afresh, see ``load_state``). ``init``
    (generator, encoder, their source's name) starts a new joint run from those weights (``FaceModelTrainer.start_from``);
    InputError with an existing checkpoint. Each log line holds the step's losses, ``images`` seen and the
    ``cpu_hours`` of process CPU time spent in training steps so far.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    if images.ndim != 4 or images.shape[1:] != (arch.size, arch.size, 3) or images.dtype != np.uint8:
        raise InputError(f"training faces must be uint8 (n, {arch.size}, {arch.size}, 3), got {images.dtype} {images.shape}")
    if settings.mode == "encoder" and generator is None:
        raise InputError("encoder mode needs a trained generator (--generator)")
    trainer = FaceModelTrainer(arch, settings, device, generator=generator)  # checks the settings: before any file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CHECKPOINT
    if init is not None and ckpt.is_file():
        raise InputError(f"{ckpt} exists: --init starts a new run (continue this one with --resume alone, or choose "
                         "another output folder)")
    if init is not None:
        trainer.start_from(*init)
    if resume and ckpt.is_file():
        trainer.load_state(read_torch_file(ckpt, keys=("arch", "settings", "modules"), what="train-face-model checkpoint"), ckpt,
                           new_discriminator=new_discriminator)
    elif ckpt.is_file():
        raise InputError(f"{ckpt} exists: pass --resume to continue it, or choose another output folder")
    (out_dir / "config.json").write_text(json.dumps({"arch": asdict(arch), "settings": asdict(settings)}, indent=1))
    rng = np.random.default_rng([settings.seed, trainer.step_count])
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + trainer.step_count)
    data = torch.from_numpy(np.ascontiguousarray(images))
    use_pairs = pairs is not None and len(pairs) > 0 and settings.temporal_weight > 0 and settings.mode == "joint"
    m = int(round(settings.pair_fraction * settings.batch / 2)) if use_pairs else 0
    shown = to_tensor((preview if preview is not None else images)[:8])
    probabilities = tone_balanced_probabilities(images, settings.tone_balance)
    if settings.photo_share > 0:
        if is_photo is None:
            raise InputError("--photo-share needs to know which faces are photos (a prepare-faces folder)")
        probabilities = photo_share_probabilities(probabilities, is_photo, settings.photo_share)
    start_time = time.monotonic()
    # The log restarts from the checkpoint's history: steps a killed chunk logged after its last checkpoint run
    # again now and must not stay in the log twice.
    write_bytes_atomic(out_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in trainer.history).encode())
    log = (out_dir / "log.jsonl").open("a")
    bar = tqdm(range(trainer.step_count, settings.steps), initial=trainer.step_count, total=settings.steps,
               desc=f"train face {settings.mode}", unit="step", disable=not progress, mininterval=2.0)
    try:
        for _ in bar:
            rows = rng.integers(0, len(data), settings.batch) if probabilities is None else \
                rng.choice(len(data), settings.batch, p=probabilities)
            flip = rng.random(settings.batch) < 0.5
            if m:
                chosen = pairs[rng.integers(0, len(pairs), m)]
                rows[:m], rows[m:2 * m] = chosen[:, 0], chosen[:, 1]
                flip[m:2 * m] = flip[:m]
            x = data[torch.from_numpy(rows)].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if settings.flip:
                x = torch.where(torch.from_numpy(flip)[:, None, None, None], x.flip(3), x)
            x = random_geometry(x, settings.geometric, gen, pairs=m)
            x = random_photometric(x, settings.photometric, gen, pairs=m)
            x = random_face_tone(x, settings.face_tone, gen, pairs=m)
            losses = trainer.step(x, pairs=m)
            if not all(math.isfinite(v) for v in losses.values()):
                raise InputError(f"training diverged at step {trainer.step_count} (losses {losses}); lower the learning rate")
            trainer.history.append({"step": trainer.step_count, "images": trainer.step_count * settings.batch,
                                    "cpu_hours": round(trainer.cpu_seconds / 3600, 4), **losses})
            log.write(json.dumps(trainer.history[-1]) + "\n")
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
            step = trainer.step_count
            if step % settings.sample_every == 0:
                write_grid(out_dir / "samples" / f"step_{step:07d}.png", sample_rows(trainer, shown))
            timed_out = settings.max_minutes > 0 and (time.monotonic() - start_time) > settings.max_minutes * 60
            if step % settings.checkpoint_every == 0 or timed_out:
                log.flush()
                save_checkpoint(trainer, ckpt)
            if timed_out:
                break
    finally:
        log.close()
    save_checkpoint(trainer, ckpt)
    write_grid(out_dir / "samples" / "last.png", sample_rows(trainer, shown))
    return trainer
