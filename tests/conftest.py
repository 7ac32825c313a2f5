"""Shared fixtures. Torch runs on one thread: tests share two cores, and timings need no threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from sganc_stream.latent.model import LatentCodecModel, load_latent_codec  # noqa: E402
from sganc_stream.latent.synthetic import synthetic_latents  # noqa: E402
from sganc_stream.training.latent_codec import TrainConfig, train_latent_codec  # noqa: E402

TINY_ROWS, TINY_WIDTH = 6, 32


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """A test that changes torch's threads (a CLI run with --threads) leaves one thread for the next test."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_codec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small latent codec (6x32, three stage groups) trained for a few steps on synthetic sequences, without
    temporal-context tables (as models made before bitstream v5; `fit-context-tables` adds them)."""
    seqs = [synthetic_latents(k, 40, TINY_ROWS, TINY_WIDTH, seed=i) for i, k in enumerate(["smooth", "walk"] * 3)]
    path = tmp_path_factory.mktemp("codec") / "tiny.safetensors"
    train_latent_codec(seqs, path, TrainConfig(steps=40, batch=8, hidden=16, step_presets=[0.25, 0.5, 1.0]), progress=False,
                       context_classes=0)
    return path


@pytest.fixture(scope="session")
def tiny_codec(tiny_codec_path: Path) -> LatentCodecModel:
    return load_latent_codec(tiny_codec_path)
