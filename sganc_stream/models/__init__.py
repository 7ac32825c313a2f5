"""StyleGAN2 generator and W+ encoders (pSp, e4e, our fast encoder), checkpoint and bundle loading.

The names below load on first use (PEP 562), so that importing a light sub-module such as
:mod:`sganc_stream.models.weights` (the command line's ``weights`` parser) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LoadedModel": "checkpoint", "load_checkpoint": "checkpoint", "save_model_bundle": "checkpoint",
    "Encoder4Editing": "encoders", "GradualStyleEncoder": "encoders", "images_to_tensor": "encoders",
    "FastEncoder": "fast_encoder", "FastEncoderConfig": "fast_encoder",
    "Generator": "stylegan2", "GeneratorConfig": "stylegan2",
}

if TYPE_CHECKING:
    from sganc_stream.models.checkpoint import LoadedModel, load_checkpoint, save_model_bundle
    from sganc_stream.models.encoders import Encoder4Editing, GradualStyleEncoder, images_to_tensor
    from sganc_stream.models.fast_encoder import FastEncoder, FastEncoderConfig
    from sganc_stream.models.stylegan2 import Generator, GeneratorConfig

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
