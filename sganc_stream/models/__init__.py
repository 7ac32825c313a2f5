"""StyleGAN2 generator and W+ encoders (pSp, e4e, our fast encoder), checkpoint and bundle loading."""

from sganc_stream.models.checkpoint import LoadedModel, load_checkpoint, save_model_bundle
from sganc_stream.models.encoders import Encoder4Editing, GradualStyleEncoder, images_to_tensor
from sganc_stream.models.fast_encoder import FastEncoder, FastEncoderConfig
from sganc_stream.models.stylegan2 import Generator, GeneratorConfig

__all__ = [
    "Encoder4Editing",
    "FastEncoder",
    "FastEncoderConfig",
    "Generator",
    "GeneratorConfig",
    "GradualStyleEncoder",
    "LoadedModel",
    "images_to_tensor",
    "load_checkpoint",
    "save_model_bundle",
]
