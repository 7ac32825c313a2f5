"""Quality mode (offline): refine the encoder's W+ of each frame by gradient descent before it is coded.

GAN inversion by latent optimisation (Abdal et al., "Image2StyleGAN", ICCV 2019), started from the encoder's
projection as pSp/e4e's own refinement does (Richardson et al. 2021; Tov et al. 2021), with the losses this project
trains its face model on: MSE + (1 − MS-SSIM) (:func:`sganc_stream.training.face_model.reconstruction_loss`) and
dlib's identity distance (:class:`sganc_stream.training.identity.IdentityLoss`), plus a temporal term that pulls each
frame's W+ toward the previous frame's refined W+, so a talking head keeps its few inter bits: without it every
frame's optimisation wanders its own way and the latent differences grow.

The loss of a batch of consecutive frames ``w_0..w_{n-1}`` (``w_{-1}``: the previous batch's last refined W+,
none at the start of a stream or after a new face) is

    mean_i [ rec(G(w_i), x_i) + identity_weight · d_id(G(w_i), x_i) ] + temporal_weight · mean_i mean((w_i − w_{i−1})²)

minimised with Adam (lr ``lr``) for ``steps`` steps over all frames of the batch at once. Images are compared at
the smaller of the crop's and the generator's side (the larger is area-downsampled), in [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from sganc_stream.errors import InputError
from sganc_stream.models.encoders import images_to_tensor

if TYPE_CHECKING:
    from sganc_stream.pipeline import FaceModel


@dataclass(frozen=True)
class RefineOptions:
    """``steps`` Adam steps per frame batch (0: off); weights of the identity and temporal terms; learning rate.

    Raises InputError (one line) for a negative count or weight, or a learning rate that is not positive.
    """

    steps: int = 0
    lr: float = 0.01
    identity_weight: float = 0.5
    temporal_weight: float = 10.0  # benchmarks/refine_quality.py: 10 gave fewer bits and better identity than 1

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise InputError(f"--refine must be 0 or more steps, got {self.steps}")
        if not self.lr > 0:
            raise InputError(f"refinement learning rate must be positive, got {self.lr}")
        if self.identity_weight < 0 or self.temporal_weight < 0:
            raise InputError("refinement loss weights must be 0 or more")


def refine_settings(refine: RefineOptions | None) -> dict[str, float] | None:
    """The refinement settings as a report and the resume check record them: None when refinement is off."""
    return None if refine is None or refine.steps == 0 else asdict(refine)


class LatentRefiner:
    """Refines W+ against the aligned crops with the model's generator (frozen); see the module docstring.

    ``refine(crops, init, previous)``: crops uint8 ``(n, S, S, 3)`` (the aligned faces E saw), ``init`` float32
    ``(n, rows, width)`` (E's W+), ``previous`` float32 ``(rows, width)`` or None → refined float32
    ``(n, rows, width)``. ``last_loss`` holds the final step's loss terms (floats) for reports and tests.
    """

    def __init__(self, model: FaceModel, options: RefineOptions) -> None:
        self.model, self.options = model, options
        self.generator = model.generator
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.identity = None
        if options.identity_weight > 0:
            from sganc_stream.training.identity import IdentityLoss  # dlib's network: loaded only for this mode

            self.identity = IdentityLoss().to(model.device).eval()
        self.last_loss: dict[str, float] = {}

    def refine(self, crops: np.ndarray, init: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from sganc_stream.training.face_model import reconstruction_loss

        o, dev = self.options, self.model.device
        if len(crops) != len(init):
            raise InputError(f"refine: {len(crops)} crops but {len(init)} latents")
        target = images_to_tensor(crops).to(dev)
        side = min(target.shape[-1], self.model.size)
        if target.shape[-1] != side:
            target = F.interpolate(target, size=(side, side), mode="area")
        w = torch.from_numpy(np.array(init, dtype=np.float32)).to(dev).requires_grad_(True)
        before = None if previous is None else torch.from_numpy(np.asarray(previous, np.float32)).to(dev)[None]
        optimiser = torch.optim.Adam([w], lr=o.lr)
        with torch.enable_grad():
            for _ in range(o.steps):
                image = self.generator(w)
                if image.shape[-1] != side:
                    image = F.interpolate(image, size=(side, side), mode="area")
                rec, mse, sim = reconstruction_loss(image, target, 1.0, 1.0)
                loss = rec
                terms = {"mse": mse.item(), "ms_ssim": sim.item()}
                if self.identity is not None:
                    distance = self.identity(image, target)
                    loss = loss + o.identity_weight * distance
                    terms["identity"] = distance.item()
                chain = w if before is None else torch.cat([before, w])
                if o.temporal_weight > 0 and len(chain) > 1:
                    temporal = (chain[1:] - chain[:-1]).square().mean()
                    loss = loss + o.temporal_weight * temporal
                    terms["temporal"] = temporal.item()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                self.last_loss = {**terms, "loss": loss.item()}
        return w.detach().float().cpu().numpy()
