import numpy as np
import pytest

from sganc_stream.errors import InputError
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.training.latent_codec import TrainConfig, load_latent_sequences, train_latent_codec

CFG = dict(batch=8, hidden=16, step_presets=[0.5, 1.0], checkpoint_every=10)


def _seqs():
    return [synthetic_latents(k, 30, 6, 16, seed=i) for i, k in enumerate(["smooth", "walk", "smooth"])]


def test_training_lowers_the_loss(tmp_path):
    _, losses = train_latent_codec(_seqs(), tmp_path / "m.safetensors", TrainConfig(steps=60, **CFG), progress=False)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    model = load_latent_codec(tmp_path / "m.safetensors")
    assert model.info["train_steps"] == 60 and len(model.tables["intra"]) == 2


def test_resume_continues_from_checkpoint(tmp_path):
    out = tmp_path / "m.safetensors"
    train_latent_codec(_seqs(), out, TrainConfig(steps=10, **CFG), progress=False)
    _, losses = train_latent_codec(_seqs(), out, TrainConfig(steps=20, **CFG), resume=True, progress=False)
    assert len(losses) == 20
    with pytest.raises(InputError, match="other settings"):
        train_latent_codec(_seqs(), out, TrainConfig(steps=30, lam=5.0, **CFG), resume=True, progress=False)


def test_single_group_and_identity_flow(tmp_path):
    cfg = TrainConfig(steps=3, groups="single", couplings=0, **CFG)
    train_latent_codec(_seqs(), tmp_path / "m.safetensors", cfg, progress=False)
    model = load_latent_codec(tmp_path / "m.safetensors")
    assert model.groups == [(0, 6)] and len(model.flows[0].layers) == 0


def test_loading_latent_files(tmp_path):
    np.save(tmp_path / "a.npy", synthetic_latents("smooth", 5, 6, 16))
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "b.npy", synthetic_latents("walk", 7, 6, 16))
    assert [len(s) for s in load_latent_sequences([tmp_path])] == [5, 7]
    np.save(tmp_path / "c.npy", np.zeros((5, 7, 16), np.float32))
    with pytest.raises(InputError, match="differs"):
        load_latent_sequences([tmp_path])
    with pytest.raises(InputError, match="no such"):
        load_latent_sequences([tmp_path / "nope"])
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable"):
        load_latent_sequences([tmp_path / "x.npy"])
