"""A tiny random-weight face model bundle for the pipeline tests, built once per test session.

Generator 64 px (channel multiplier 1), fast encoder for 64 px crops, latent codec for (10, 512) trained for a
few steps on synthetic sequences: the plumbing is the same for every model, so random weights exercise it all.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.models import FastEncoder, FastEncoderConfig, Generator, GeneratorConfig, save_model_bundle
from sganc_stream.training.latent_codec import TrainConfig, train_latent_codec

TINY_SIZE = 64


@cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="sganc-pipeline-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def tiny_bundle() -> Path:
    """Path of a full bundle (generator + encoder + codec), built on first use."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=TINY_SIZE, channel_multiplier=1)).eval()
    e = FastEncoder(FastEncoderConfig(input_size=TINY_SIZE, n_latent=g.n_latent, base_channels=8, max_channels=32)).eval()
    rows, width = g.n_latent, g.config.style_dim
    out = _workdir()
    seqs = [synthetic_latents(k, 20, rows, width, seed=i) for i, k in enumerate(["smooth", "walk"] * 2)]
    codec_path = out / "codec.safetensors"
    train_latent_codec(seqs, codec_path, TrainConfig(steps=10, batch=4, hidden=16), progress=False)
    codec = load_bundle(codec_path)
    face = out / "face.safetensors"
    save_model_bundle(face, g, e, extra_config={"codec": codec.config["codec"]}, extra_tensors=codec.tensors)
    return face


def variant_bundle(src: Path, dst: Path) -> Path:
    """The same weights under another model id (a changed config entry): what decode must refuse."""
    bundle = load_bundle(src)
    Bundle(bundle.tensors, {**bundle.config, "licence": "another model"}).save(dst)
    return dst
