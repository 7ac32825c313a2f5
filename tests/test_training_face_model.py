"""Face-model training loops (gan, encoder, joint) run on CPU on tiny data, lower their losses, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sganc_stream.errors import InputError
from sganc_stream.training.augment import diff_augment, parse_policy
from sganc_stream.training.discriminator import Discriminator, PatchDiscriminator
from sganc_stream.training.face_model import (FaceModelConfig, FaceModelTrainer, TrainSettings, adaptive_weight,
                                              colour_loss, d_logistic, feature_matching, load_trainer, lowpass, random_crops,
                                              photo_share_probabilities, random_face_tone, random_geometry, random_photometric, set_memory_format, to_tensor, tone_balanced_probabilities,
                                              train_face_model)

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
    assert np.mean(d_losses[-3:]) < 0.8 * np.mean(d_losses[:3]) < 2.0  # equalized D: starts near chance, learns
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
    with (run / "log.jsonl").open("a") as log:  # a step a killed chunk logged after its last checkpoint
        log.write('{"step": 4, "images": 16, "cpu_hours": 0.0, "loss": 1.0}\n')
    settings.steps = 5
    trainer = train_face_model(faces, run, TINY, settings, progress=False, resume=True)
    assert trainer.step_count == 5 and [h["step"] for h in trainer.history] == [1, 2, 3, 4, 5]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == trainer.history
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
    with pytest.raises(InputError, match="D crop"):  # a bad option leaves nothing behind
        train_face_model(_faces(4), tmp_path / "run", TINY, TrainSettings(steps=1, batch=2, adv_weight=0.1, d_crop=12),
                         progress=False)
    assert not (tmp_path / "run").exists()


def test_diff_augment_keeps_shape_and_gradients() -> None:
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    y = diff_augment(x, parse_policy("color,translation,cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tapered_generator_widths_follow_channel_base() -> None:
    arch = FaceModelConfig(size=128, channel_base=3072, channel_max=256)
    cfg = arch.generator_config()
    assert [cfg.channels(2 ** k) for k in range(2, 8)] == [256, 256, 192, 96, 48, 24]
    assert cfg.n_latent == 12
    with pytest.raises(ValueError, match="channel_base"):
        FaceModelConfig(size=128, channel_base=64).generator_config()


def test_channels_last_training_computes_the_same_step_and_exports_contiguous_weights() -> None:
    x = to_tensor(_faces(4))
    runs = []
    for channels_last in (False, True):
        trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=4, seed=0))
        assert trainer.channels_last  # the default on CPU
        trainer.channels_last = channels_last
        for module in (trainer.g, trainer.e):
            set_memory_format(module, torch.channels_last if channels_last else torch.contiguous_format)
        runs.append([trainer.step(x)["loss"] for _ in range(3)])
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)
    g, e = trainer.exported()
    assert all(t.is_contiguous() for m in (g, e) for t in m.state_dict().values())
    conv = next(p for p in trainer.e.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_random_geometry_moves_faces_and_keeps_pairs_together() -> None:
    x = to_tensor(_faces(6))
    assert torch.equal(random_geometry(x, 0.0), x)
    gen = torch.Generator().manual_seed(0)
    y = random_geometry(x, 1.0, gen, pairs=2)
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
    # The second frame of a pair gets the first frame's transform: identical inputs stay identical.
    same = torch.cat([x[:2], x[:2], x[4:]])
    z = random_geometry(same, 1.0, torch.Generator().manual_seed(1), pairs=2)
    assert torch.allclose(z[:2], z[2:4]) and not torch.allclose(z[0], z[4])


def test_random_photometric_changes_tone_keeps_range_and_pairs() -> None:
    x = to_tensor(_faces(6))
    assert torch.equal(random_photometric(x, 0.0), x)
    same = torch.cat([x[:2], x[:2], x[4:]])
    y = random_photometric(same, 1.0, torch.Generator().manual_seed(0), pairs=2)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y[:2], y[2:4])  # the second frame of a pair gets the first frame's change
    mean_change = (y - same).mean((1, 2, 3)).abs()
    assert (mean_change > 1e-3).all()  # every face changed (prob 1)
    # Over many draws the exposure range reaches darker than brighter: the mean level falls.
    many = random_photometric(x[:1].expand(400, -1, -1, -1), 1.0, torch.Generator().manual_seed(1))
    assert many.mean() < x[:1].mean() - 0.05


def test_random_face_tone_darkens_the_face_not_the_background_and_keeps_pairs() -> None:
    x = to_tensor(_faces(6))
    assert torch.equal(random_face_tone(x, 0.0), x)
    same = torch.cat([x[:2], x[:2], x[4:]])
    y = random_face_tone(same, 1.0, torch.Generator().manual_seed(0), pairs=2)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y[:2], y[2:4])
    change = (y - same).abs()
    centre, corners = change[..., 28:40, 28:40].mean(), change[..., :6, :6].mean()
    assert centre > 0.02 and corners < 1e-6  # the face changes, the background does not
    # Over many draws the face region comes out darker: the range reaches darker than brighter.
    many = random_face_tone(x[:1].expand(400, -1, -1, -1), 1.0, torch.Generator().manual_seed(1))
    assert many[..., 28:40, 28:40].mean() < x[:1, :, 28:40, 28:40].mean() - 0.1
    with pytest.raises(InputError, match="face-tone"):
        TrainSettings(face_tone=1.5).check()


def test_photo_share_gives_photos_their_share_and_keeps_proportions_within_each_kind() -> None:
    is_photo = np.array([True] * 3 + [False] * 7)
    assert photo_share_probabilities(None, is_photo, 0.0) is None
    p = photo_share_probabilities(None, is_photo, 0.75)
    assert p.sum() == pytest.approx(1) and p[is_photo].sum() == pytest.approx(0.75)
    assert np.allclose(p[:3], 0.25) and np.allclose(p[3:], 0.25 / 7)  # uniform within each kind
    tone = np.arange(1, 11, dtype=np.float64) / 55  # e.g. tone-balanced weights
    q = photo_share_probabilities(tone, is_photo, 0.5)
    assert q[is_photo].sum() == pytest.approx(0.5) and q[1] / q[0] == pytest.approx(2) and q[9] / q[3] == pytest.approx(2.5)
    assert photo_share_probabilities(tone, np.ones(10, bool), 0.5) is tone  # one kind only: unchanged
    with pytest.raises(InputError, match="photo share"):
        TrainSettings(photo_share=-0.1).check()


def test_temporal_and_delta_terms_shrink_latent_change_between_pair_frames() -> None:
    x = to_tensor(_faces(8))
    x = torch.cat([x[:2], x[:2] + 0.05 * torch.randn_like(x[:2]), x[4:]])  # two "consecutive frame" pairs
    def run(temporal: float, delta: float) -> list[dict[str, float]]:
        trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=6, temporal_weight=temporal,
                                                       delta_weight=delta, seed=3))
        out = [trainer.step(x, pairs=2) for _ in range(15)]
        assert trainer.cpu_seconds > 0
        return out

    with_terms, without = run(5.0, 1.0), run(1e-9, 1e-9)
    assert {"temporal", "delta", "loss"} <= set(with_terms[0])
    last = {k: np.mean([o[k] for o in with_terms[-3:]]) for k in ("temporal", "delta")}
    assert last["temporal"] < np.mean([o["temporal"] for o in with_terms[:3]])
    assert last["temporal"] < 0.5 * np.mean([o["temporal"] for o in without[-3:]])
    assert last["delta"] < 0.5 * np.mean([o["delta"] for o in without[-3:]])


def test_resume_may_switch_on_later_terms_and_counts_cpu_time(tmp_path: Path) -> None:
    faces = _faces()
    run = tmp_path / "run"
    pairs = np.array([[0, 1], [2, 3]])
    first = TrainSettings(mode="joint", steps=2, batch=4, temporal_weight=1.0, pair_fraction=0.5, geometric=0.5)
    train_face_model(faces, run, TINY, first, progress=False, pairs=pairs)
    later = TrainSettings(mode="joint", steps=4, batch=4, temporal_weight=1.0, pair_fraction=0.5, geometric=0.5,
                         adv_weight=0.1)
    trainer = train_face_model(faces, run, TINY, later, progress=False, pairs=pairs, resume=True)
    assert trainer.d is not None and trainer.step_count == 4
    assert "adv" in trainer.history[-1] and "adv" not in trainer.history[0] and "temporal" in trainer.history[0]
    # The log rounds CPU-hours to 4 decimals (0.36 s): tiny steps on a fast CPU log 0.0, so check the exact count.
    assert trainer.history[-1]["images"] == 16 and trainer.cpu_seconds > 0
    assert trainer.history[-1]["cpu_hours"] == round(trainer.cpu_seconds / 3600, 4)
    assert load_trainer(run / "checkpoint.pt").cpu_seconds == pytest.approx(trainer.cpu_seconds)


def test_a_checkpoint_older_than_an_architecture_field_resumes_with_its_default(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_face_model(_faces(), run, TINY, TrainSettings(mode="joint", steps=1, batch=4), progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    arch = json.loads(state["arch"])
    del arch["enc_identity_dim"]  # as a checkpoint written before the field existed
    state["arch"] = json.dumps(arch)
    torch.save(state, run / "checkpoint.pt")
    assert load_trainer(run / "checkpoint.pt", steps=2).arch == TINY
    assert train_face_model(_faces(), run, TINY, TrainSettings(mode="joint", steps=2, batch=4), progress=False,
                            resume=True).step_count == 2


def test_identity_terms_join_the_joint_loss_and_lower_it() -> None:
    x = to_tensor(_faces(4))
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=4, identity_weight=1.0,
                                                   face_perceptual_weight=1.0, seed=4))
    out = [trainer.step(x) for _ in range(12)]
    assert {"identity", "face_perceptual"} <= set(out[0])
    assert all(p.grad is None or not p.requires_grad for p in trainer.identity.parameters())  # dlib's net stays frozen
    assert np.mean([o["face_perceptual"] for o in out[-3:]]) < np.mean([o["face_perceptual"] for o in out[:3]])


def test_identity_conditioned_encoder_trains_its_descriptor_head_from_the_identity_terms_features() -> None:
    from dataclasses import replace

    x = to_tensor(_faces(4))
    trainer = FaceModelTrainer(replace(TINY, enc_identity_dim=128),
                               TrainSettings(mode="joint", batch=4, identity_weight=1.0, face_perceptual_weight=1.0, seed=4))
    assert trainer.e.config.identity_dim == 128 and not trainer.e.identity_head.weight.any()
    losses = [trainer.step(x)["loss"] for _ in range(8)]
    assert trainer.e.identity_head.weight.abs().sum() > 0  # the head learns from the descriptors it was given
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    _, e = trainer.exported(ema=False)
    with torch.no_grad():  # the exported encoder computes the descriptor itself, as the trainer fed it
        descriptors = trainer.identity.descriptors(x)
        torch.testing.assert_close(e(x), e.codes(x, identity=descriptors) + e.latent_avg, rtol=1e-5, atol=1e-5)


def test_bf16_networks_train_with_float32_losses_and_weights() -> None:
    x = to_tensor(_faces(4))
    settings = dict(mode="joint", batch=4, identity_weight=0.5, face_perceptual_weight=0.5, colour_weight=1.0, seed=5)
    fp32 = FaceModelTrainer(TINY, TrainSettings(**settings))
    bf16 = FaceModelTrainer(TINY, TrainSettings(**settings, bf16=True))
    first32, first16 = fp32.step(x), bf16.step(x)
    # the same weights and batch: the losses agree to bfloat16's precision, so every loss saw the same images
    assert first16["mse"] == pytest.approx(first32["mse"], rel=0.05)
    assert first16["identity"] == pytest.approx(first32["identity"], rel=0.05)
    assert first16["mse"] != first32["mse"]  # and the networks did run in bfloat16
    losses = [bf16.step(x)["loss"] for _ in range(10)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(p.dtype == torch.float32 for p in (*bf16.g.parameters(), *bf16.e.parameters()))


def test_fresh_discriminator_at_stylegan2_learning_rate_keeps_sane_logits() -> None:
    # The 128 px model's D widths (fan-in 4,096 at the first linear layer). With plain nn.Conv2d / nn.Linear layers,
    # Adam at lr 2e-3 sent this D's logits to ±1,000 within 5 steps on these images; equalized layers stay near 0.
    torch.manual_seed(0)
    d = Discriminator(FaceModelConfig(size=64, channel_base=3072, channel_max=256).generator_config())
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(0)
    real = torch.nn.functional.interpolate(torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1, size=64, mode="bilinear")
    fake = torch.nn.functional.avg_pool2d(real, 5, 1, 2)
    peaks = []
    for _ in range(6):
        opt.zero_grad()
        r, f = d(real), d(fake)
        d_logistic(r, f).backward()
        opt.step()
        peaks.append(max(r.abs().max().item(), f.abs().max().item()))
    assert max(peaks) < 5.0, peaks


def test_d_warmup_holds_the_adversarial_weight_at_zero_then_ramps_linearly() -> None:
    x = to_tensor(_faces(4))
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=4, adv_weight=0.2, d_warmup=3, adv_ramp=4,
                                                   fm_weight=0.5, d_lr=1e-3, seed=5))
    assert trainer.opts["d"].param_groups[0]["lr"] == pytest.approx(1e-3 * 16 / 17)  # d_lr, lazy-R1 corrected
    out = [trainer.step(x) for _ in range(9)]
    assert all("d" in o and np.isfinite(list(o.values())).all() for o in out)  # D trains from the first step
    assert [o.get("adv_weight", 0.0) for o in out] == pytest.approx([0, 0, 0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert ["fm" in o for o in out] == [False] * 3 + [True] * 6


def test_d_warmup_counts_from_the_chunk_that_adds_d_and_survives_resume(tmp_path: Path) -> None:
    faces, run = _faces(), tmp_path / "run"
    train_face_model(faces, run, TINY, TrainSettings(mode="joint", steps=2, batch=4), progress=False)
    later = dict(mode="joint", batch=4, adv_weight=0.1, d_warmup=2, adv_ramp=2, adv_adaptive=True, fm_weight=0.1)
    # This chunk adds D at step 2 and stops inside its warm-up; the next one, with a new D learning rate, goes on.
    trainer = train_face_model(faces, run, TINY, TrainSettings(steps=3, **later), progress=False, resume=True)
    assert trainer.d_start == 2 and "adv" not in trainer.history[-1] and "d" in trainer.history[-1]
    assert load_trainer(run / "checkpoint.pt").d_start == 2
    trainer = train_face_model(faces, run, TINY, TrainSettings(steps=6, d_lr=5e-4, **later), progress=False,
                               resume=True)
    assert trainer.d_start == 2 and trainer.opts["d"].param_groups[0]["lr"] == pytest.approx(5e-4 * 16 / 17)
    weights = [h.get("adv_weight", 0.0) / h.get("adv_lambda", 1.0) for h in trainer.history]
    assert weights == pytest.approx([0, 0, 0, 0, 0.05, 0.1])
    assert all(np.isfinite(list(h.values())).all() for h in trainer.history)
    assert trainer.history[-1]["adv_lambda"] > 0 and trainer.history[-1]["fm"] > 0


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_layer() -> None:
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(4)
    rec, adv = 3.0 * (w @ x).sum(), (w @ x).square().sum()
    g_rec, g_adv = torch.autograd.grad(rec, w, retain_graph=True)[0], torch.autograd.grad(adv, w, retain_graph=True)[0]
    lam = adaptive_weight(rec, adv, w)
    assert lam.item() == pytest.approx((g_rec.norm() / (g_adv.norm() + 1e-4)).item(), rel=1e-6)
    assert not lam.requires_grad
    assert adaptive_weight(rec, 0 * adv, w, max_weight=50.0).item() == pytest.approx(50.0)  # clamped when D is flat


def test_feature_matching_is_zero_for_the_real_image_and_pulls_the_fake_toward_it() -> None:
    d = Discriminator(TINY.generator_config())
    real = to_tensor(_faces(4))
    assert feature_matching(d, real.clone(), real).item() == 0.0
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    loss = feature_matching(d, fake, real)
    loss.backward()
    assert loss.item() > 0 and fake.grad is not None and fake.grad.abs().sum() > 0


def test_patch_discriminator_judges_full_resolution_crops_at_a_fraction_of_the_cost() -> None:
    cfg = FaceModelConfig(size=64, channel_base=3072, channel_max=256).generator_config()
    whole, patch = Discriminator(cfg), Discriminator(cfg, input_size=16)
    # the patch D keeps the whole D's first (full-resolution) widths and has fewer blocks
    assert patch.from_rgb.weight.shape == whole.from_rgb.weight.shape
    assert [b.conv1.weight.shape for b in patch.blocks] == [b.conv1.weight.shape for b in whole.blocks[:2]]
    assert patch(torch.zeros(3, 3, 16, 16)).shape == (3,)
    for bad in (4, 24, 128):
        with pytest.raises(ValueError, match="power of two"):
            Discriminator(cfg, input_size=bad)
    with pytest.raises(InputError, match="D crop"):
        FaceModelTrainer(TINY, TrainSettings(mode="joint", adv_weight=0.1, d_crop=12))
    with pytest.raises(InputError, match="larger than"):
        FaceModelTrainer(TINY, TrainSettings(mode="joint", adv_weight=0.1, d_crop=128))


def test_random_crops_cut_the_same_windows_of_a_pair() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    a, b = random_crops(x, 4, gen, like=-x)
    assert a.shape == (2, 3, 4, 4) and torch.equal(b, -a)
    windows = {tuple(random_crops(x, 4, gen)[0, 0, 0, :1].tolist()) for _ in range(40)}
    assert len(windows) > 5  # positions vary
    assert random_crops(x, 8, gen) is x  # a crop as large as the image is the image


def test_joint_training_with_a_patch_discriminator_learns_and_refuses_another_crop_on_resume(tmp_path: Path) -> None:
    faces = _faces()
    run = tmp_path / "run"
    patch = dict(mode="joint", batch=8, adv_weight=0.05, d_crop=16, fm_weight=0.1, seed=3)
    trainer = train_face_model(faces, run, TINY, TrainSettings(steps=25, **patch), progress=False)
    losses = [h["mse"] for h in trainer.history]
    assert trainer.d is not None and trainer.d.input_size == 16 and "fm" in trainer.history[-1]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    with pytest.raises(InputError, match="another layout"):
        train_face_model(faces, run, TINY, TrainSettings(steps=26, **{**patch, "d_crop": 32}), progress=False,
                         resume=True)


def test_patchgan_discriminator_learns_to_tell_sharp_from_blurred_faces() -> None:
    """The task the residual D failed on real faces (benchmarks/d_blur_probe.py): real images against the same
    images blurred, trained with the trainer's own D step (DiffAugment off), judged on held-out images."""
    def sharp(n: int, seed: int) -> torch.Tensor:
        x = to_tensor(_faces(n, seed))
        return (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)
    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="bilinear", align_corners=False)
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=8, adv_weight=0.1, d_arch="patchgan",
                                                   augment="none", seed=0))
    assert isinstance(trainer.d, PatchDiscriminator)
    for step in range(60):
        x = sharp(8, step)
        trainer._d_step(x, blur(x))
        trainer.step_count += 1
    held = sharp(16, 1000)
    with torch.no_grad():
        accuracy = ((trainer.d(held) > 0).float().mean() + (trainer.d(blur(held)) < 0).float().mean()) / 2
    assert accuracy > 0.8, accuracy
    with pytest.raises(InputError, match="D architecture"):
        TrainSettings(d_arch="vgg").check()


def test_joint_training_with_patchgan_refuses_the_other_discriminator_on_resume(tmp_path: Path) -> None:
    faces = _faces()
    run = tmp_path / "run"
    patch = dict(mode="joint", batch=8, adv_weight=0.05, d_crop=32, d_arch="patchgan", fm_weight=0.1, seed=3)
    trainer = train_face_model(faces, run, TINY, TrainSettings(steps=3, **patch), progress=False)
    assert isinstance(trainer.d, PatchDiscriminator) and "fm" in trainer.history[-1]
    with pytest.raises(InputError, match="another layout"):
        train_face_model(faces, run, TINY, TrainSettings(steps=4, **{**patch, "d_arch": "stylegan2"}),
                         progress=False, resume=True)


def test_conditional_patchgan_tells_a_tone_shift_that_an_unconditional_d_cannot() -> None:
    """Reals get a random exposure offset b, their "reconstructions" the offset −b: the fakes' distribution is the
    reals', so only a D that also sees the real face's low-pass (``--d-condition lowpass``) can tell them apart, as
    it must to stop G moving a face's tone toward the typical one (the unconditional D darkened light faces)."""
    def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor(_faces(n, seed)) * 0.5
        b = (torch.rand(n, 1, 1, 1, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 0.4
        return x + b, x - b
    def accuracy(condition: str) -> float:
        trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=8, adv_weight=0.1, d_arch="patchgan",
                                                       d_condition=condition, augment="none", seed=0))
        for step in range(60):
            trainer._d_step(*batch(8, step + 1))
            trainer.step_count += 1
        held_real, held_fake = batch(32, 1000)
        with torch.no_grad():
            return float((trainer.d(trainer._conditioned(held_real, held_real)) > 0).float().mean()
                         + (trainer.d(trainer._conditioned(held_fake, held_real)) < 0).float().mean()) / 2
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=8, adv_weight=0.1, d_arch="patchgan",
                                                   d_condition="lowpass", augment="none", seed=0))
    assert isinstance(trainer.d, PatchDiscriminator) and trainer.d.convs[0].in_channels == 6
    real, fake = batch(4, 0)
    seen = trainer._conditioned(fake, real)
    assert seen.shape == (4, 6, 64, 64) and torch.equal(seen[:, :3], fake)
    assert torch.allclose(seen[:, 3:], lowpass(real)) and torch.allclose(lowpass(real).mean((2, 3)), real.mean((2, 3)),
                                                                          atol=1e-5)
    conditional, unconditional = accuracy("lowpass"), accuracy("none")
    assert conditional > 0.8 > 0.65 > unconditional, (conditional, unconditional)  # measured: 0.91, 0.42
    for bad, needle in ((dict(d_arch="stylegan2"), "needs --d-arch patchgan, got stylegan2"),
                        (dict(d_arch="patchgan", augment="color,translation"), "without color")):
        with pytest.raises(InputError, match=needle):
            TrainSettings(mode="joint", d_condition="lowpass", **bad).check()  # type: ignore[arg-type]
    with pytest.raises(InputError, match="D condition"):
        TrainSettings(d_condition="highpass").check()


def test_new_discriminator_without_resume_is_one_line_before_the_data_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sganc_stream.cli import main
    assert main(["train-face-model", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"),
                 "--new-discriminator"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--new-discriminator" in err[0] and "needs --resume" in err[0], err
    assert not (tmp_path / "run").exists()


def test_resume_can_start_a_new_discriminator(tmp_path: Path) -> None:
    faces = _faces()
    run = tmp_path / "run"
    patch = dict(mode="joint", batch=8, adv_weight=0.05, d_crop=32, d_arch="patchgan", augment="none", seed=3)
    train_face_model(faces, run, TINY, TrainSettings(steps=3, **patch), progress=False)
    conditional = TrainSettings(steps=5, d_condition="lowpass", **patch)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="another layout.*--new-discriminator"):
        train_face_model(faces, run, TINY, conditional, progress=False, resume=True)
    trainer = train_face_model(faces, run, TINY, conditional, progress=False, resume=True, new_discriminator=True)
    assert trainer.step_count == 5 and trainer.d_start == 3 and trainer.d.convs[0].in_channels == 6
    assert "d" in trainer.history[-1] and "adv" in trainer.history[-1]


def test_colour_loss_sees_a_tint_but_not_fine_detail() -> None:
    x = to_tensor(_faces(4))
    assert colour_loss(x, x).item() == 0.0
    tinted = x + torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)  # warmer: a skin-tone shift
    checker = torch.ones(1, 1, 64, 64)
    checker[..., ::2, :] *= -1
    checker[..., :, ::2] *= -1
    detail = x + 0.2 * checker  # ±0.2 texture at the pixel scale, zero mean over every cell
    assert colour_loss(tinted, x).item() == pytest.approx(2 * 0.1 / 3, rel=1e-4)
    assert colour_loss(detail, x).item() < 1e-6 < torch.nn.functional.l1_loss(detail, x).item()
    trainer = FaceModelTrainer(TINY, TrainSettings(mode="joint", batch=4, colour_weight=2.0, seed=2))
    colours = _run(trainer, x, 20, "colour")
    assert np.mean(colours[-3:]) < 0.7 * np.mean(colours[:3])


def test_tone_balanced_sampling_draws_the_rare_skin_tone_more_often() -> None:
    """9 light faces to 1 dark one: uniform draws give the dark one 10 %, square-root sampling (α = 0.5) gives it
    1/(1 + 3) = 25 % (each light face (1/9)^0.5 ÷ total 9·(1/3) + 1), a flat histogram (α = 1) 50 %."""
    faces = np.full((10, 64, 64, 3), 200, np.uint8)
    faces[3] = 60  # the one dark face, wherever it sits
    assert tone_balanced_probabilities(faces, 0.0) is None
    p = tone_balanced_probabilities(faces, 0.5)
    assert p.dtype == np.float64 and p.sum() == pytest.approx(1.0) and p[3] == pytest.approx(0.25)
    assert np.allclose(np.delete(p, 3), 0.75 / 9)
    assert tone_balanced_probabilities(faces, 1.0)[3] == pytest.approx(0.5)
    with pytest.raises(InputError, match="tone balance"):
        TrainSettings(tone_balance=1.5).check()


def test_training_with_tone_balance_runs_and_can_be_switched_on_at_resume(tmp_path: Path) -> None:
    faces = _faces(8)
    base = dict(mode="joint", batch=4, checkpoint_every=1, sample_every=100)
    train_face_model(faces, tmp_path, TINY, TrainSettings(steps=1, **base), progress=False)
    trainer = train_face_model(faces, tmp_path, TINY, TrainSettings(steps=3, tone_balance=0.5, **base),
                               progress=False, resume=True)
    assert trainer.step_count == 3 and trainer.s.tone_balance == 0.5


def test_photo_share_trains_and_needs_to_know_the_photos(tmp_path: Path) -> None:
    faces = _faces()
    settings = TrainSettings(mode="joint", steps=2, batch=4, photo_share=0.75, seed=1)
    with pytest.raises(InputError, match="--photo-share needs"):
        train_face_model(faces, tmp_path / "a", TINY, settings, progress=False)
    trainer = train_face_model(faces, tmp_path / "b", TINY, settings, progress=False,
                               is_photo=np.arange(len(faces)) < 2)
    assert trainer.step_count == 2
