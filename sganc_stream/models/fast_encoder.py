"""A small W+ encoder for our embedded model: real-time on a laptop CPU.

pSp's IR-SE50 costs tens of GFLOPs per frame; this one is a five-stage residual CNN (about 0.3 GMAC at
128 px) with pSp's coarse / middle / fine split: rows 0-2 read the coarsest map, rows 3-6 the middle one,
the rest the finest. Each group head pools its map to ``head_pool``² cells and predicts its rows with
one linear layer, and ``latent_avg`` is added, so an untrained head starts at the average face.
It is configured by input resolution and ``n_latent``; the training issue fits its weights.

With ``identity_dim`` = 128 the encoder is also conditioned on the face's identity: dlib's 128-D face descriptor of
the input crop (its face-recognition ResNet, trained on about 3 million faces, through
:class:`sganc_stream.training.identity.IdentityLoss`'s fixed chip warp; frozen, not part of the encoder's weights)
is mapped by one linear layer to W+ offsets added to all rows. This is how pSp brings a face-recognition network's
knowledge into its encoder (its IR-SE50 backbone starts from ArcFace weights) and how SimSwap injects an identity
vector through AdaIN (Chen et al. 2020), here in W+, which drives G's modulations. The layer starts at zero, so
an untrained head leaves the encoder as it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

ROW_GROUPS = (3, 4)  # rows per coarse and middle group; the fine group takes the rest
DESCRIPTOR_DIM = 128  # dlib's face descriptor
_descriptor_nets: dict[torch.device, nn.Module] = {}  # one frozen dlib network per device, shared by encoders


def descriptor_net(device: torch.device) -> nn.Module:
    """The frozen dlib network (:class:`sganc_stream.training.identity.IdentityLoss`) on ``device``, built on first use
    and shared. An identity-conditioned encoder builds the CPU one when it is made, so that a trace of its forward
    (ONNX export, TorchScript) records the network's computation and not its construction (weight initialisation
    ops that ONNX cannot export)."""
    net = _descriptor_nets.get(device)
    if net is None:
        from sganc_stream.training.identity import IdentityLoss

        net = _descriptor_nets[device] = IdentityLoss().to(device).requires_grad_(False)
    return net


def face_descriptors(x: torch.Tensor) -> torch.Tensor:
    """dlib's 128-D descriptors, float32 (n, 128), of FFHQ-recipe crops x (n, 3, S, S) in [-1, 1], without grad."""
    with torch.no_grad():
        return descriptor_net(x.device).descriptors(x)


@dataclass(frozen=True)
class FastEncoderConfig:
    input_size: int = 128
    n_latent: int = 18
    width: int = 512
    base_channels: int = 32
    max_channels: int = 256
    head_pool: int = 2
    identity_dim: int = 0  # 0, or DESCRIPTOR_DIM: condition on dlib's face descriptor of the input

    def __post_init__(self) -> None:
        if any(type(v) is not int for v in asdict(self).values()):
            raise ValueError("fast encoder config values must be integers")
        log = math.log2(self.input_size) if self.input_size > 0 else 0.5
        if not (log.is_integer() and 5 <= log <= 10):
            raise ValueError(f"fast encoder input_size must be a power of two in 32..1024, got {self.input_size}")
        if not (1 <= self.n_latent <= 64 and 1 <= self.width <= 4096 and 1 <= self.base_channels <= 1024
                and 1 <= self.max_channels <= 4096 and 1 <= self.head_pool <= 64):
            raise ValueError("n_latent (1..64), width (1..4096), base_channels (1..1024), max_channels (1..4096) and "
                             "head_pool (1..64) out of range")
        if self.identity_dim not in (0, DESCRIPTOR_DIM):
            raise ValueError(f"fast encoder identity_dim must be 0 or {DESCRIPTOR_DIM}, got {self.identity_dim}")

    def to_dict(self) -> dict:
        """The bundle's ``encoder`` config. ``identity_dim`` is written only when set, so an encoder without it has
        the config, and therefore the model id, that it had before the field existed."""
        d = asdict(self)
        if not d["identity_dim"]:
            del d["identity_dim"]
        return {"type": "fast", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "FastEncoderConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def conv_bn(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch))


class ResidualStage(nn.Module):
    """Stride-2 conv, then one two-conv residual block."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.down = conv_bn(in_ch, out_ch, 2)
        self.conv1 = conv_bn(out_ch, out_ch, 1)
        self.conv2 = conv_bn(out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.down(x), 0.2)
        return F.leaky_relu(x + self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)


class RowHead(nn.Module):
    """Pooled feature map → ``rows`` W+ rows."""

    def __init__(self, channels: int, rows: int, width: int, pool: int):
        super().__init__()
        self.pool = pool
        self.rows = rows
        self.width = width
        self.linear = nn.Linear(channels * pool * pool, rows * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, self.pool).flatten(1)
        return self.linear(x).view(-1, self.rows, self.width)


class FastEncoder(nn.Module):
    """Images ``(n, 3, H, W)`` in [-1, 1] → W+ ``(n, n_latent, width)`` including ``latent_avg``."""

    kind = "fast"

    def __init__(self, config: FastEncoderConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else FastEncoderConfig(**kwargs)
        self.config = cfg
        ch = cfg.base_channels
        self.stem = conv_bn(3, ch, 2)
        stages = []
        for _ in range(int(math.log2(cfg.input_size)) - 3):  # stem halves once, stages down to 4x4
            out = min(ch * 2, cfg.max_channels)
            stages.append(ResidualStage(ch, out))
            ch = out
        self.stages = nn.ModuleList(stages)
        coarse = min(ROW_GROUPS[0], cfg.n_latent)
        middle = min(ROW_GROUPS[1], cfg.n_latent - coarse)
        self.group_rows = [r for r in (coarse, middle, cfg.n_latent - coarse - middle) if r > 0]
        # Coarse rows read the last (4x4) stage, middle the one before, fine the one before that.
        taps = [len(stages) - 1 - g for g in range(len(self.group_rows))]
        self.taps = [max(t, 0) for t in taps]
        self.heads = nn.ModuleList(
            RowHead(stages[t].conv2[0].out_channels, rows, cfg.width, cfg.head_pool)
            for t, rows in zip(self.taps, self.group_rows)
        )
        self.identity_head: nn.Linear | None = None
        if cfg.identity_dim:
            self.identity_head = nn.Linear(cfg.identity_dim, cfg.n_latent * cfg.width)
            nn.init.zeros_(self.identity_head.weight)
            nn.init.zeros_(self.identity_head.bias)
            descriptor_net(torch.device("cpu"))  # now, outside any trace of forward (see descriptor_net)
        self.register_buffer("latent_avg", torch.zeros(cfg.n_latent, cfg.width))

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def codes(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """W+ offsets from ``latent_avg``, (n, n_latent, width), for images x (n, 3, H, W) in [-1, 1].

        ``identity``: float (n, 128) dlib descriptors of x, for an identity-conditioned encoder (``identity_dim``);
        computed from x (:func:`face_descriptors`) when not given; ignored otherwise.
        """
        if self.identity_head is not None and identity is None:
            identity = face_descriptors(x)
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = F.leaky_relu(self.stem(x), 0.2)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        codes = torch.cat([head(feats[t]) for head, t in zip(self.heads, self.taps)], dim=1)
        if self.identity_head is not None:
            codes = codes + self.identity_head(identity.to(codes.dtype)).view(-1, self.config.n_latent,
                                                                              self.config.width)
        return codes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.codes(x) + self.latent_avg
