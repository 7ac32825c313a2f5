"""Identity loss for training: dlib's face-recognition ResNet (PyTorch port) on FFHQ-aligned face crops.

pSp and e4e train their encoders with an ArcFace identity loss; the one pretrained face network available offline
here is dlib's, ported exactly in :mod:`sganc_stream.face.dlib_resnet`. dlib reads a 150 px "face chip" that its
68-point landmarks place (``dlib.get_face_chip(img, shape, 150, 0.25)``); our crops follow the FFHQ recipe
(:mod:`sganc_stream.face.ffhq_quad`), a looser, differently centred framing. :class:`IdentityLoss` maps a crop into
the chip with ONE fixed affine warp (``F.grid_sample``, differentiable), :data:`CHIP_WARP`, measured as below, then
runs the frozen network.

The loss is the Euclidean distance between the two 128-D descriptors: the metric dlib's network was trained for
(``loss_metric``; same person when < 0.6) and the one ``sganc_stream.metrics.identity_distance`` reports. The
descriptors are not unit vectors (norms about 1.4-1.6), so 1 - cos would discard part of what dlib measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sganc_stream.errors import InputError
from sganc_stream.face.dlib_resnet import CHIP_SIZE, DlibFaceResNet
from sganc_stream.metrics import FaceDescriptor

if TYPE_CHECKING:  # imported where used, as in sganc_stream.metrics: the loss itself never needs dlib
    import dlib

CHIP_PADDING = 0.25  # dlib's default, used by compute_face_descriptor(img, shape)
# The chip in crop coordinates: theta of F.affine_grid (align_corners=False), i.e. normalised chip position
# (x, y, 1) in [-1, 1]^2 -> normalised crop position. Measured by ``python3 benchmarks/dlib_chip_warp.py``: for each
# of the 128 px FFHQ-recipe crops of runs/faces128, dlib's detector and 68-point predictor run on the crop as
# sganc_stream.metrics does, and get_face_chip applied to images holding each pixel's own x and y coordinates gives
# that crop's chip-to-crop map exactly (a similarity: least-squares residual ~1e-15); CHIP_WARP is the mean of the
# per-crop maps. The spread between crops (std in the README/benchmark record) is the warp's error for one face.
# Measured on 394 crops (400 sampled photos, seed 0; 6 without a detected face): std between crops of the scale
# terms 0.043, of the x/y shifts 0.018/0.023; one face's chip corners lie a median 6.8 chip px (p95 15) from the
# mean warp's, so through this warp a descriptor is a median 0.12 from dlib's own for the same crop (0.005 through
# the crop's exact warp) — a consistent offset for prediction and target, not noise between them.
CHIP_WARP = ((0.677805, 0.000384, 0.009215), (-0.000384, 0.677805, 0.201199))
MEASURE_MIN_FACES = 8  # measure_chip_warp refuses fewer detected faces than this


def chip_warp_of(crop: np.ndarray, shape: dlib.full_object_detection) -> np.ndarray:
    """The exact (2, 3) chip-to-crop theta (normalised coordinates) that get_face_chip(crop, shape) samples."""
    import dlib

    size_y, size_x = crop.shape[:2]
    xs = np.broadcast_to(np.arange(size_x, dtype=np.float64), (size_y, size_x)).copy()
    ys = np.broadcast_to(np.arange(size_y, dtype=np.float64)[:, None], (size_y, size_x)).copy()
    chip_x = dlib.get_face_chip(xs, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    chip_y = dlib.get_face_chip(ys, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    # chip pixels sampled inside the crop (outside, dlib writes 0); bilinear taps of a linear ramp are exact
    inside = (chip_x > 1) & (chip_x < size_x - 2) & (chip_y > 1) & (chip_y < size_y - 2)
    rows, cols = np.nonzero(inside)
    if len(rows) < 3:
        raise InputError("the face chip lies outside the crop")
    a = np.stack([(2 * cols + 1) / CHIP_SIZE - 1, (2 * rows + 1) / CHIP_SIZE - 1, np.ones(len(rows))], axis=1)
    b = np.stack([(2 * chip_x[inside] + 1) / size_x - 1, (2 * chip_y[inside] + 1) / size_y - 1], axis=1)
    return np.linalg.lstsq(a, b, rcond=None)[0].T


def measure_chip_warp(crops: np.ndarray, descriptor: FaceDescriptor | None = None) -> np.ndarray:
    """Per-crop chip-to-crop thetas (M, 2, 3) for the crops (N, S, S, 3) uint8 RGB in which dlib finds a face.

    Faces are found as sganc_stream.metrics finds them (HOG detector, no fallback box: a fallback would measure the
    box, not the face). Raises InputError when fewer than MEASURE_MIN_FACES faces are found.
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise InputError(f"expected square uint8 RGB crops (N, S, S, 3), got {crops.dtype} {crops.shape}")
    descriptor = descriptor or FaceDescriptor(fallback=False)
    thetas = []
    for crop in crops:
        crop = np.ascontiguousarray(crop)
        box, _ = descriptor.face_box(crop)
        if box is not None:
            thetas.append(chip_warp_of(crop, descriptor.predictor(crop, box)))
    if len(thetas) < MEASURE_MIN_FACES:
        raise InputError(f"dlib found faces in {len(thetas)} of {len(crops)} crops; need {MEASURE_MIN_FACES}")
    return np.stack(thetas)


@dataclass(frozen=True)
class IdentityTerms:
    """Per-sample (n,) float32 terms: descriptor distance and face-perceptual feature distance."""

    distance: torch.Tensor
    perceptual: torch.Tensor


def _scale(theta: torch.Tensor) -> float:
    """The largest chip-to-crop scale of (2, 3) or (n, 2, 3) warps, normalised units (1: chip step = crop step)."""
    return float(theta[..., :2].norm(dim=-2).max())


def _normalised(f: torch.Tensor) -> torch.Tensor:
    return f * torch.rsqrt(f.square().sum(dim=1, keepdim=True) + 1e-10)


class IdentityLoss(nn.Module):
    """dlib identity distance between face crops, differentiable in the first argument.

    Inputs: float (n, 3, S, S) RGB in [-1, 1], FFHQ-recipe crops, S from 64 to 1024 (any S >= 32 runs). Each is
    area-downsampled by the integer factor that brings the chip's sampling step under 2 source pixels (none below
    S = 443 with CHIP_WARP), warped with :data:`CHIP_WARP` to a 150 x 150 chip (bilinear, border padding), scaled
    to 0..255 and run through the frozen :class:`DlibFaceResNet` (eval, requires_grad False; gradients flow to the
    input only). ``chips``/``features``/``descriptors`` also take per-sample warps ``theta`` (n, 2, 3), e.g. each
    target crop's exact dlib warp from :func:`chip_warp_of`, instead of the fixed one.

    ``forward(x, target)``: scalar, the batch mean of ``compare(x, target).distance``.
    ``compare(x, target)``: :class:`IdentityTerms`: Euclidean descriptor distance (dlib's "same person" < 0.6) and
    a face-perceptual distance — LPIPS-style (Zhang et al. 2018, without learned weights): at each of the network's
    six stages (stem, five residual levels) features unit-normalised over channels, squared difference summed over
    channels and averaged over positions, then averaged over stages. ``target`` is computed without gradients.
    """

    def __init__(self, net: DlibFaceResNet | None = None,
                 warp: tuple[tuple[float, ...], ...] = CHIP_WARP) -> None:
        super().__init__()
        self.net = net or DlibFaceResNet()
        theta = torch.tensor(warp, dtype=torch.float32)
        if theta.shape != (2, 3):
            raise InputError(f"chip warp must be 2x3, got {tuple(theta.shape)}")
        self.register_buffer("grid", F.affine_grid(theta[None], [1, 3, CHIP_SIZE, CHIP_SIZE], align_corners=False))
        self.scale = _scale(theta)

    def train(self, mode: bool = True) -> IdentityLoss:
        """Always eval: nothing in it trains."""
        return super().train(False)

    def chips(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 3, S, S) crops in [-1, 1] -> (n, 3, 150, 150) dlib chips, pixel values 0..255 (float).

        ``theta``: optional (n, 2, 3) per-sample chip-to-crop warps replacing CHIP_WARP.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or x.shape[2] < 32:
            raise InputError(f"IdentityLoss expects square (n, 3, S, S) crops with S >= 32, got {tuple(x.shape)}")
        if theta is not None and theta.shape != (x.shape[0], 2, 3):
            raise InputError(f"per-sample warps must be ({x.shape[0]}, 2, 3), got {tuple(theta.shape)}")
        size = x.shape[2]
        factor = int((self.scale if theta is None else _scale(theta)) * size / CHIP_SIZE)  # crop px per chip px
        if factor >= 2:
            x = F.avg_pool2d(x, factor) if size % factor == 0 else F.interpolate(x, size=size // factor, mode="area")
        if theta is None:
            grid = self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        else:
            grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], 3, CHIP_SIZE, CHIP_SIZE], align_corners=False)
        chip = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (chip + 1.0) * 127.5

    def features(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(n, 128) descriptors and the six stage activations of crops x (n, 3, S, S) in [-1, 1], float32 (under
        autocast the network runs in its lower precision; its outputs come back as float32)."""
        feats = self.net.features(self.chips(x.float(), theta))
        return self.net.descriptor(feats[-1]).float(), [f.float() for f in feats]

    def descriptors(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 128) dlib descriptors of crops x (n, 3, S, S) in [-1, 1]."""
        return self.features(x, theta)[0]

    def compare(self, x: torch.Tensor, target: torch.Tensor,
                target_features: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> IdentityTerms:
        """Per-sample identity and face-perceptual distances between crops x and target (same shape).

        ``target_features``: ``features(target)`` when the caller has them already (computed without gradients).
        """
        if x.shape != target.shape:
            raise InputError(f"IdentityLoss: crops differ in shape: {tuple(x.shape)} vs {tuple(target.shape)}")
        desc, feats = self.features(x)
        if target_features is None:
            with torch.no_grad():
                target_features = self.features(target)
        t_desc, t_feats = target_features
        distance = torch.sqrt((desc - t_desc).square().sum(dim=1) + 1e-12)
        perceptual = torch.stack([(_normalised(a) - _normalised(b)).square().sum(dim=1).mean(dim=(1, 2))
                                  for a, b in zip(feats, t_feats)]).mean(dim=0)
        return IdentityTerms(distance, perceptual)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.compare(x, target).distance.mean()
