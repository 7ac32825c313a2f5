"""Face-model training loops (gan, encoder, joint) run on CPU on tiny data, lower their losses, and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.errors import InputError
from sganc_stream.training.augment import diff_augment, parse_policy
from sganc_stream.training.face_model import (FaceModelConfig, FaceModelTrainer, TrainSettings, load_trainer,
                                              to_tensor, train_face_model)

TINY = FaceModelConfig(size=64, style_dim=64, n_mlp=2, channel_max=16, enc_base_channels=8, enc_max_channels=32)


def _faces(n: int = 8, seed: int = 0) -> np.ndarray:
    """Smooth face-like test images: a bright ellipse with two dark eyes on a random background colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    out = np.empty((n, 64, 64, 3), dtype=np.uint8)
    for i in range(n):
        bg = rng.uniform(0, 120, 3)
        face = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5 - rng.uniform(-0.05, 0.05)) / 0.4) ** 2 < 1
        eyes = (((xx - 0.38) ** 2 + (yy - 0.42) ** 2) < 0.003) | (((xx - 0.62) ** 2 + (yy - 0.42) ** 2) < 0.003)
        img = np.where(face[..., None], rng.uniform(150, 230, 3), bg)
        out[i] = np.where(eyes[..., None], 30, img).astype(np.uint8)
    return out


def _run(trainer: FaceModelTrainer, x: torch.Tensor, steps: int, key: str) -> list[float]:
    return [trainer.step(x)[key] for _ in range(steps)]


def test_joint_autoencoder_lowers_its_reconstruction_loss() -> None:
    x = to_tensor(_faces())
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=8, seed=0))
    losses = _run(trainer, x, 25, "loss")
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_joint_adversarial_term_and_r1_run() -> None:
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=4, adv_weight=0.1, r1_every=2))
    out = [trainer.step(to_tensor(_faces(4))) for _ in range(2)]
    assert {"adv", "d", "loss"} <= set(out[0]) and "r1" in out[0]
    assert all(np.isfinite(v) for o in out for v in o.values())


def test_gan_loop_discriminator_learns_and_ema_follows() -> None:
    x = to_tensor(_faces())
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="gan", batch=8, augment="translation", r1_every=4, seed=1))
    before = [p.clone() for p in trainer.g_ema.parameters()]
    d_losses = _run(trainer, x, 20, "d")
    assert np.mean(d_losses[-3:]) < np.mean(d_losses[:3]) < 1.5
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.g_ema.parameters()))


def test_encoder_loop_lowers_latent_loss_with_frozen_generator() -> None:
    gtrainer = FaceModelTrainer(TINY, TrainSettings(mode="gan", batch=4))
    g, _ = gtrainer.exported()
    frozen = [p.clone() for p in g.parameters()]
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="encoder", batch=8, enc_lr=2e-3, seed=2), generator=g)
    losses = _run(trainer, to_tensor(_faces()), 25, "loss")
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert all(torch.equal(a, b) for a, b in zip(frozen, g.parameters()))


def test_train_face_model_checkpoints_samples_and_resumes(tmp_path: Path) -> None:
    faces = _faces()
    run = tmp_path / "run"
    settings = TrainSettings(mode="joint", steps=3, batch=4, sample_every=2, checkpoint_every=2)
    train_face_model(faces, run, TINY, settings, progress=False)
    assert (run / "checkpoint.pt").is_file() and (run / "samples" / "step_0000002.png").is_file()
    with pytest.raises(InputError, match="--resume"):
        train_face_model(faces, run, TINY, settings, progress=False)
    settings.steps = 5
    trainer = train_face_model(faces, run, TINY, settings, progress=False, resume=True)
    assert trainer.step_count == 5 and [h["step"] for h in trainer.history] == [1, 2, 3, 4, 5]
    assert load_trainer(run / "checkpoint.pt").step_count == 5
    other = TrainSettings(mode="joint", steps=6, batch=4, lr=1e-4)
    with pytest.raises(InputError, match="other settings"):
        train_face_model(faces, run, TINY, other, progress=False, resume=True)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="uint8"):
        train_face_model(np.zeros((4, 32, 32, 3), np.uint8), tmp_path, TINY, TrainSettings(steps=1, batch=2), progress=False)
    with pytest.raises(InputError, match="generator"):
        train_face_model(_faces(4), tmp_path, TINY, TrainSettings(mode="encoder", steps=1, batch=2), progress=False)
    with pytest.raises(InputError, match="policy"):
        TrainSettings(augment="rotate").check()


def test_diff_augment_keeps_shape_and_gradients() -> None:
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    y = diff_augment(x, parse_policy("color,translation,cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
