"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a PyTorch module.

The weights are read from the ``.dat`` file that ``face-recognition-models`` installs, in dlib's own ``serialize``
format, by pure Python/NumPy (no dlib needed), and kept in memory; nothing converted is written to disk.

The format (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, tensor.h, loss.h):

* integers: a control byte (bit 0x80 = negative, low 4 bits = number of bytes), then the magnitude little-endian;
* floats/doubles (scalars): an integer mantissa then an integer exponent, value = mantissa * 2**exponent;
* strings: length as an integer, then the bytes; bools: the ASCII byte '0' or '1';
* tensors (``resizable_tensor``, version 2): version, num_samples, k, nr, nc, then raw little-endian float32s;
  ``alias_tensor`` (version 1): version, num_samples, k, nr, nc (a view's shape, no data);
* a network: ``add_loss_layer`` writes its version (1), the loss details, then its subnet; every ``add_layer``
  writes its version (2), its subnet *first*, then its layer details, three bools and three tensors (gradient and
  output caches, empty in a saved model); the bottom ``add_layer`` (version 3) writes the input layer, its details,
  three bools, three tensors and its sample-expansion factor; ``tag``/``skip`` layers write a version (1) and their
  subnet. So the file is: loss, the chain of versions from the top layer down, the input layer, then each layer's
  details from the bottom up.

The network (dlib's examples/dnn_face_recognition_ex.cpp; the same type as dlib's Python binding):

    loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

with alevel4 = 3 x ares<32>, alevel3 = ares_down<64> + 3 x ares<64>, alevel2 = ares_down<128> + 2 x ares<128>,
alevel1 = ares_down<256> + 2 x ares<256>, alevel0 = ares_down<256>; ares = relu(x + affine(con3(relu(affine(
con3(x)))))), ares_down the same with the first convolution at stride 2 and ``x`` replaced by avg_pool<2,2,2,2>(x).
``affine`` is dlib's frozen batch norm: a per-channel scale and shift. dlib's defaults give padding 1 to stride-1
3x3 convolutions and padding 0 to every strided convolution and pooling. Where a residual's two branches differ in
size (channels 128 -> 256; 8x8 -> 3x3 vs 4x4; 4x4 -> 1x1 vs 2x2) dlib's ``add_prev`` adds them into a tensor of the
larger size of each dimension, each operand zero-padded at the end (tt::add with bounds checking). The input layer
maps an RGB pixel (0..255) to (value - mean) / 256 per channel, means (122.782, 117.001, 104.298) read from the file.
``loss_metric`` outputs the fc layer's 128 numbers unchanged: the descriptor. dlib calls two faces the same person
when their descriptors' Euclidean distance is below 0.6 (the loss's ``dist_thresh``, also read from the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sganc_stream.errors import InputError
from sganc_stream.face.dlib_models import FACE_DESCRIPTOR, model_path

CHIP_SIZE = 150  # input_rgb_image_sized<150>
DESCRIPTOR_SIZE = 128
# (channels, blocks, whether the level starts with a strided residual), bottom to top: alevel4 .. alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class DatFormatError(InputError):
    """The ``.dat`` file is not the serialized network this module ports."""


class _Reader:
    """A cursor over a dlib ``serialize`` byte stream."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DatFormatError(f"dlib model file ends early (byte {self.pos}, wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        if control & 0x70:
            raise DatFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if abs(exponent) >= 32000:  # float_details' codes for inf/NaN: never in a trained model
            raise DatFormatError(f"non-finite float in dlib model file at byte {self.pos}")
        return float(np.ldexp(float(mantissa), exponent))

    def text(self) -> str:
        return bytes(self._take(self.integer())).decode("latin-1")

    def flag(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise DatFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def expect(self, what: str, value: object, got: object) -> None:
        if got != value:
            raise DatFormatError(f"dlib model file: expected {what} {value!r}, found {got!r} (byte {self.pos})")

    def tensor(self) -> np.ndarray:
        self.expect("tensor version", 2, self.integer())
        shape = tuple(self.integer() for _ in range(4))  # num_samples, k, nr, nc
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        self.expect("alias_tensor version", 1, self.integer())
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


@dataclass
class Layer:
    """One computational layer as dlib serialized it: kind and its parameters."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: dict[str, object] = field(default_factory=dict)


@dataclass
class DlibNet:
    """The parsed file: input means, the layers bottom-up, and the loss's same-person threshold."""

    means: tuple[float, float, float]
    layers: list[Layer]
    dist_thresh: float


def _layer_details(r: _Reader) -> Layer:
    name = r.text()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        n, nr, nc, sy, sx, py, px = (r.integer() for _ in range(7))
        filters, biases = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        size = int(np.prod(filters))
        r.expect("con_ parameter count", size + n, params.size)
        return Layer("con", {"weight": params[:size].reshape(filters), "bias": params[size:size + n],
                             "stride": (sy, sx), "padding": (py, px), "kernel": (nr, nc)})
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias(), r.alias()
        r.expect("affine_ mode (CONV_MODE)", 0, r.integer())
        r.expect("affine_ shape", gamma, beta)
        k = gamma[1]
        r.expect("affine_ parameter count", 2 * k, params.size)
        return Layer("affine", {"gamma": params[:k], "beta": params[k:]})
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        return Layer(name[:-2], {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)})
    if name == "relu_":
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        outputs, inputs = r.integer(), r.integer()
        params = r.tensor()
        weights, _biases = r.alias(), r.alias()
        r.expect("fc_ bias mode (FC_NO_BIAS)", 1, r.integer())
        for _ in range(4):
            r.real()
        r.expect("fc_ weights shape", (inputs, outputs, 1, 1), weights)
        return Layer("fc", {"weight": params.reshape(inputs, outputs)})
    raise DatFormatError(f"dlib model file: layer type {name!r} is not part of the face ResNet")


def _skip_caches(r: _Reader, tensors: int) -> None:
    for _ in range(3):
        r.flag()
    for _ in range(tensors):
        r.tensor()


def parse_dat(data: bytes) -> DlibNet:
    """Parse dlib_face_recognition_resnet_model_v1's serialized network (format: module docstring).

    Raises DatFormatError (an InputError) if the bytes are not that network.
    """
    r = _Reader(data)
    r.expect("add_loss_layer version", 1, r.integer())
    r.expect("loss", "loss_metric_2", r.text())
    r.real()  # margin
    dist_thresh = r.real()
    versions = []
    while (v := r.integer()) != 3:  # 2: add_layer, 1: tag/skip, 3: the add_layer on the input layer
        if v not in (1, 2):
            raise DatFormatError(f"dlib model file: unexpected layer version {v} at byte {r.pos}")
        versions.append(v)
    r.expect("input layer", "input_rgb_image_sized", r.text())
    means = (r.real(), r.real(), r.real())
    r.expect("input size", (CHIP_SIZE, CHIP_SIZE), (r.integer(), r.integer()))
    layers = [_layer_details(r)]
    _skip_caches(r, 3)
    r.integer()  # sample expansion factor
    for v in reversed(versions):
        if v == 2:
            layers.append(_layer_details(r))
            _skip_caches(r, 3)
    if r.pos != len(r.data):
        raise DatFormatError(f"dlib model file has {len(r.data) - r.pos} unread bytes")
    return DlibNet(means, layers, dist_thresh)


_MAX_POOL = {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0)}  # max_pool<3,3,2,2>
_DOWN_POOL = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}  # avg_pool<2,2,2,2> in residual_down
_GLOBAL_POOL = {"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)}  # avg_pool_everything


def _expected_layers() -> list[tuple[str, dict[str, object]]]:
    """Layer kinds bottom-up as the C++ type above nests them, with the pooling settings this module hard-codes."""
    layers: list[tuple[str, dict[str, object]]] = [("con", {}), ("affine", {}), ("relu", {}), ("max_pool", _MAX_POOL)]
    block = [("con", {}), ("affine", {}), ("relu", {}), ("con", {}), ("affine", {})]
    for _, blocks, down in LEVELS:
        for b in range(blocks):
            layers += block
            layers += [("avg_pool", _DOWN_POOL)] if down and b == 0 else []
            layers += [("add_prev", {}), ("relu", {})]
    return layers + [("avg_pool", _GLOBAL_POOL), ("fc", {})]


def _matches(layer: Layer, kind: str, settings: dict[str, object]) -> bool:
    return layer.kind == kind and all(layer.params[k] == v for k, v in settings.items())


@cache
def load_dat(path: Path | None = None) -> DlibNet:
    """The parsed network from ``path`` (default: face-recognition-models' file), cached for the process."""
    path = path or model_path(FACE_DESCRIPTOR)
    net = parse_dat(Path(path).read_bytes())
    expected = _expected_layers()
    if len(net.layers) != len(expected) or not all(_matches(la, *ex) for la, ex in zip(net.layers, expected)):
        raise DatFormatError(f"{path}: layer sequence is not dlib's face ResNet v1")
    return net


def _conv(layer: Layer, affine: Layer) -> nn.Conv2d:
    """dlib's con_ followed by its affine_ (frozen batch norm), folded into one convolution."""
    w = torch.from_numpy(layer.params["weight"])
    gamma, beta = torch.from_numpy(affine.params["gamma"]), torch.from_numpy(affine.params["beta"])
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=layer.params["stride"],
                     padding=layer.params["padding"])
    with torch.no_grad():
        conv.weight.copy_(w * gamma[:, None, None, None])
        conv.bias.copy_(torch.from_numpy(layer.params["bias"]) * gamma + beta)
    return conv


def _pad_to(x: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """Zero-pad (n, c, hh, ww) at the end of each dimension up to (n, k, h, w): dlib's add_prev operand."""
    dk, dh, dw = k - x.shape[1], h - x.shape[2], w - x.shape[3]
    return F.pad(x, (0, dw, 0, dh, 0, dk)) if dk or dh or dw else x


class ResBlock(nn.Module):
    """ares / ares_down: relu(conv-affine-relu-conv-affine(x) + shortcut(x)), shortcut = x or avg_pool 2x2/2."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        if not self.down:
            return F.relu(y + x, inplace=True)
        s = F.avg_pool2d(x, 2, 2)
        k, h, w = (max(a, b) for a, b in zip(y.shape[1:], s.shape[1:]))
        return F.relu(_pad_to(y, k, h, w) + _pad_to(s, k, h, w), inplace=True)


class DlibFaceResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 in PyTorch, weights from the ``.dat`` file, frozen and in eval mode.

    ``forward(x)``: x float32 (n, 3, 150, 150), RGB pixel values 0..255 (not normalised: the input layer's mean
    subtraction and /256 happen inside), a dlib face chip (``dlib.get_face_chip(img, shape, 150, 0.25)``);
    returns (n, 128) float32 descriptors equal to ``face_recognition_model_v1.compute_face_descriptor(chip)`` within
    float32 rounding (tests/test_dlib_resnet.py). Distances: Euclidean; < ``dist_thresh`` (0.6) = same person.
    Other sizes from 104 px up run (convolutional up to the global average pool) but only 150 x 150 is dlib's.
    """

    def __init__(self, net: DlibNet | None = None) -> None:
        super().__init__()
        net = net or load_dat()
        self.dist_thresh = net.dist_thresh
        self.register_buffer("mean", torch.tensor(net.means, dtype=torch.float32).view(1, 3, 1, 1))
        convs = [layer for layer in net.layers if layer.kind == "con"]
        affines = [layer for layer in net.layers if layer.kind == "affine"]
        folded = [_conv(c, a) for c, a in zip(convs, affines)]
        self.stem = folded[0]
        self.levels = nn.ModuleList()
        i = 1
        for _, blocks, down in LEVELS:
            level = []
            for b in range(blocks):
                level.append(ResBlock(folded[i], folded[i + 1], down and b == 0))
                i += 2
            self.levels.append(nn.Sequential(*level))
        fc = net.layers[-1].params["weight"]
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc).t())
        self.requires_grad_(False)
        self.eval()
        self.to(memory_format=torch.channels_last)  # measured 15 % faster on CPU than NCHW (README, identity loss)

    def train(self, mode: bool = True) -> DlibFaceResNet:
        """Always eval: the network is a fixed, pretrained measure (no batch statistics exist to train)."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the stem's max pool and after each of the five levels (35, 17, 8, 4, 2 px for 150)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"DlibFaceResNet expects (n, 3, H, W) RGB, got {tuple(x.shape)}")
        x = ((x - self.mean) / 256.0).contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.stem(x), inplace=True), 3, 2)
        feats = [x]
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats

    def descriptor(self, last: torch.Tensor) -> torch.Tensor:
        """(n, 128) descriptors from the last level's activations (global average pool, then fc_no_bias)."""
        return self.fc(last.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(self.features(x)[-1])
