"""Test fixtures for the live-call tests: a micro random-weight face model and a small synthetic clip.

The call plumbing never looks inside the model, so the model here is as small as the bundle format allows
(64 px, 32-wide W+, 16 channels): encode and decode take milliseconds on a busy CPU, which lets two processes
hold a 10 fps call for a few seconds. The clip is a moving pattern at 64 px, coded without alignment.

The call runs ONNX Runtime by default: the models' graphs are exported here, once, into a cache folder of the test
session (``SGANC_CACHE_DIR``, inherited by the peers the tests start), so that no peer spends its first seconds
exporting them and the user's cache is left alone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import torch

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.models import FastEncoder, FastEncoderConfig, Generator, GeneratorConfig, save_model_bundle
from sganc_stream.onnx_runtime import load_onnx_face_model
from sganc_stream.training.latent_codec import TrainConfig, train_latent_codec
from sganc_stream.video import write_frames

MICRO_SIZE = 64
CLIP_FPS = 10.0


@cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="sganc-rtc-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


os.environ.setdefault("SGANC_CACHE_DIR", str(workdir() / "cache"))


def with_graphs(path: Path) -> Path:
    """``path``, its ONNX graphs exported into the cache, E's int8 graph (the call's default) too."""
    load_onnx_face_model(path, encode=True, encoder_precision="int8", quiet=True)
    return path


@cache
def micro_model() -> Path:
    """The micro bundle, built (and its graphs exported) once per test session."""
    return with_graphs(micro_bundle(workdir()))


@cache
def other_model() -> Path:
    """The same weights under another model id: what a call must refuse."""
    bundle = load_bundle(micro_model())
    path = workdir() / "other.safetensors"
    Bundle(bundle.tensors, {**bundle.config, "licence": "another model"}).save(path)
    return with_graphs(path)


@cache
def clip() -> Path:
    return pattern_clip(workdir() / "clip.mp4")


def micro_bundle(folder: Path, *, seed: int = 0, step_presets: tuple[float, ...] = (0.5, 1.0, 2.0)) -> Path:
    """Write a full bundle (generator, encoder, latent codec with ``step_presets``) into ``folder``."""
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(size=MICRO_SIZE, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16)).eval()
    e = FastEncoder(FastEncoderConfig(input_size=MICRO_SIZE, n_latent=g.n_latent, width=32, base_channels=8,
                                      max_channels=16)).eval()
    rows, width = g.n_latent, g.config.style_dim
    seqs = [synthetic_latents(k, 20, rows, width, seed=i) for i, k in enumerate(["smooth", "walk"] * 2)]
    name = f"{seed}" + ("" if step_presets == (0.5, 1.0, 2.0) else "_" + "_".join(map(str, step_presets)))
    codec_path = folder / f"codec{name}.safetensors"
    train_latent_codec(seqs, codec_path, TrainConfig(steps=10, batch=4, hidden=16, seed=seed,
                                                     step_presets=list(step_presets)), progress=False)
    codec = load_bundle(codec_path)
    face = folder / f"micro{name}.safetensors"
    save_model_bundle(face, g, e, extra_config={"codec": codec.config["codec"]}, extra_tensors=codec.tensors)
    return face


def pattern_clip(path: Path, *, frames: int = 20, seed: int = 0) -> Path:
    """A small moving pattern (64 px, 10 fps) to use as a fake camera."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (MICRO_SIZE, MICRO_SIZE, 3), dtype=np.uint8)
    write_frames(path, [np.roll(base, 2 * i, axis=1) for i in range(frames)], CLIP_FPS)
    return path
