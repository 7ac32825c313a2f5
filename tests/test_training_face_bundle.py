"""From a face-model checkpoint to a bundle: clip latents for the codec, then generator + encoder + codec."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.bundle import load_bundle
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.models import FastEncoder, load_checkpoint
from sganc_stream.training.face_bundle import build_face_bundle, encode_clip_latents, load_face_models
from sganc_stream.training.face_data import INDEX_FIELDS
from sganc_stream.training.face_model import TrainSettings, train_face_model
from sganc_stream.training.latent_codec import TrainConfig, load_latent_sequences, train_latent_codec
from tests.test_training_face_model import TINY, _faces


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared folder (two 12-frame train clips, one val photo) and a 2-step joint checkpoint on it."""
    root = tmp_path_factory.mktemp("face_bundle")
    data = root / "data"
    data.mkdir()
    faces = _faces(25)
    np.save(data / "faces.npy", faces)
    rows = [{"i": i, "source": f"clips/c{i // 12}.mp4", "frame": i % 12, "identity": f"clip:c{i // 12}",
             "split": "train", "kind": "clip"} for i in range(24)]
    rows.append({"i": 24, "source": "faces/p.jpg", "frame": 0, "identity": "photo:p", "split": "val", "kind": "photo"})
    with (data / "index.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=INDEX_FIELDS)
        w.writeheader()
        w.writerows(rows)
    train_face_model(faces, root / "run", TINY, TrainSettings(mode="joint", steps=2, batch=4), progress=False)
    return data, root / "run" / "checkpoint.pt"


def test_clip_latents_codec_and_bundle(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = prepared
    files = encode_clip_latents(ckpt, data, tmp_path / "latents")
    assert len(files) == 2 and np.load(files[0]).shape == (12, 10, 64)
    codec = tmp_path / "codec.safetensors"
    train_latent_codec(load_latent_sequences(files), codec, TrainConfig(steps=4, batch=4, hidden=8), progress=False)
    out = tmp_path / "bundle.safetensors"
    model_id = build_face_bundle(ckpt, codec, out, info={"steps": 2})
    loaded = load_checkpoint(out)
    assert loaded.model_id == model_id and isinstance(loaded.encoder, FastEncoder)
    assert loaded.config["training"] == {"steps": 2} and "research" in loaded.config["licence"]
    assert load_bundle(out).tensors["generator.input.input"].dtype == torch.float16
    assert load_latent_codec(out).rows == loaded.generator.n_latent
    g, e = load_face_models(ckpt)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():  # fp16 storage changes the weights by at most float16 rounding
        assert torch.allclose(loaded.generator(loaded.encoder(x)), g(e(x)), atol=0.05)


def test_raw_weights_differ_from_ema(prepared: tuple[Path, Path]) -> None:
    _, ckpt = prepared
    g_ema, _ = load_face_models(ckpt)
    g_raw, _ = load_face_models(ckpt, ema=False)
    assert any(not torch.equal(a, b) for a, b in zip(g_ema.parameters(), g_raw.parameters()))


def test_codec_for_another_shape_is_refused(prepared: tuple[Path, Path], tiny_codec_path: Path, tmp_path: Path) -> None:
    _, ckpt = prepared
    with pytest.raises(InputError, match="codec is for 6x32"):
        build_face_bundle(ckpt, tiny_codec_path, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="no such model file"):
        build_face_bundle(ckpt, ckpt.parent / "missing.safetensors", tmp_path / "c.safetensors")
