"""Export the model parts of a face model to ONNX (needs torch; the runtime side is :mod:`sganc_stream.onnx_runtime`).

Graphs with batch 1 and fixed shapes (what the streaming pipeline runs). :func:`export_bundle` writes them once into
a cache folder named by the bundle's model id (:func:`sganc_stream.onnx_runtime.graph_dir`; the decoder and the live
call call it on first use); ``benchmarks/runtime_speed.py`` times all four:

* ``flow_forward``  T:   W+ ``(rows, width)`` float32 → proxy ``(rows, width)`` float32, every stage group's flow
  in one graph (3 × 13 coupling layers for the default model);
* ``flow_inverse``  T⁻¹: proxy (integer state × step) ``(rows, width)`` float32 → W+ ``(rows, width)`` float32;
* ``generator``     G and the image conversion: W+ ``(1, rows, width)`` float32 → uint8 RGB ``(1, size, size, 3)``
  (:func:`sganc_stream.models.stylegan2.to_uint8_images`, the one conversion the PyTorch path also uses);
* ``encoder``       E with its input conversion (:class:`Project`): aligned uint8 RGB crops ``(1, S, S, 3)`` at E's
  input side → W+ ``(1, rows, width)`` float32.

The graphs compute the same functions as the PyTorch modules; ONNX Runtime's kernels round differently, so outputs
agree within float tolerance, not bit for bit (tests/test_onnx_runtime.py states the bounds). Opset 17, exported
with the TorchScript-based exporter (``dynamo=False``: no onnxscript needed, and the graphs are plain MatMul/Conv).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sganc_stream.bundle import Bundle
from sganc_stream.fileio import write_bytes_atomic
from sganc_stream.latent.flow import FlowStack
from sganc_stream.models.encoders import unit_range
from sganc_stream.models.stylegan2 import Generator, to_uint8_images

OPSET = 17
GRAPH_NAMES = ("flow_forward", "flow_inverse", "generator", "encoder")  # every graph a bundle can have


class Render(nn.Module):
    """G followed by the uint8 image conversion: W+ ``(n, rows, width)`` → uint8 RGB ``(n, size, size, 3)``."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        return to_uint8_images(self.generator(wplus))


class Project(nn.Module):
    """E with its input conversion: aligned uint8 RGB crops ``(n, S, S, 3)`` → W+ ``(n, rows, width)`` float32.

    Crops not at E's input side ``side`` are resized first (bilinear, antialiased); the exported graph is traced at
    ``side`` and takes crops of that side only."""

    def __init__(self, encoder: nn.Module, side: int) -> None:
        super().__init__()
        self.encoder, self.side = encoder, side

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = unit_range(crops)
        if x.shape[-1] != self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(x).float()


def to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> bytes:
    """The ONNX model (serialized protobuf) of ``module`` traced at ``example``'s fixed shape (a free batch axis fails:
    the exporter cannot type the up-sampling transposed convolution's per-sample weights)."""
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes; the tests check the outputs
        torch.onnx.export(module.eval(), (example,), buf, input_names=[input_name], output_names=[output_name],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return buf.getvalue()


def export_bundle(path: str | os.PathLike[str], directory: str | os.PathLike[str],
                  names: Collection[str] | None = None) -> list[str]:
    """Write the graphs of bundle ``path`` into ``directory`` (created if needed), each file atomically; returns their
    names. Every bundle with a latent codec has ``flow_forward`` and ``flow_inverse``; one with a generator also
    ``generator``, and one with an encoder too ``encoder``. ``names``: only those of them (default: all the bundle
    has), so that a decoder never pays for exporting E. Errors as
    :func:`sganc_stream.models.checkpoint.load_checkpoint`.
    """
    from sganc_stream.bundle import bundle_config, load_bundle
    from sganc_stream.latent.model import LatentCodecModel
    from sganc_stream.models.checkpoint import load_checkpoint

    wanted = set(GRAPH_NAMES if names is None else names)
    config = bundle_config(path)
    graphs: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    if "generator" in config and wanted & {"generator", "encoder"}:
        loaded = load_checkpoint(path)
        bundle = Bundle(loaded.extra_tensors, loaded.config)
        g = loaded.generator.eval()
        if "generator" in wanted:
            graphs["generator"] = (Render(g), torch.zeros(1, g.n_latent, g.config.style_dim))
        if "encoder" in wanted and loaded.encoder is not None and "encoder" in config:
            side = int(config["encoder"]["input_size"])
            graphs["encoder"] = (Project(loaded.encoder.eval(), side), torch.full((1, side, side, 3), 128, dtype=torch.uint8))
    else:
        bundle = load_bundle(path)
    if wanted & {"flow_forward", "flow_inverse"}:
        codec = LatentCodecModel.from_bundle(bundle, source=str(path))
        x = torch.zeros(codec.rows, codec.width)
        for name in ("flow_forward", "flow_inverse"):
            if name in wanted:
                graphs[name] = (FlowStack(codec.flows, codec.groups, inverse=name == "flow_inverse"), x)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, (module, example) in graphs.items():
        write_bytes_atomic(out / f"{name}.onnx", to_onnx(module, example, "x", "y"))
    return sorted(graphs)
