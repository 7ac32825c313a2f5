import json

import numpy as np
import pytest
import torch

from sganc_stream.errors import InputError
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.cli import main
from sganc_stream.training.latent_codec import (TrainConfig, checkpoint_path, describe_history, load_latent_sequences,
                                               train_latent_codec, training_history)
from sganc_stream.training.latent_files import find_latent_files, latents_encoder_id

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


def test_history_phrase_for_any_length():
    """First and last loss are means of disjoint step ranges, so a short run never reads 'loss a → a'."""
    assert describe_history([], []) == "no training steps"
    assert describe_history([2.0], [100.0]) == "1 step: loss 2.000, 100 bits/frame"
    assert describe_history([3.0, 2.0, 1.0], [30.0, 20.0, 10.0]) == "loss 3.000 → 1.000, bits/frame 30 → 10 (step 1 → step 3 of 3)"
    losses = [float(i) for i in range(100, 0, -1)]
    text = describe_history(losses, losses)
    assert text.startswith(f"loss {np.mean(losses[:20]):.3f} → {np.mean(losses[-20:]):.3f}") and "steps 1–20 → 81–100" in text
    assert describe_history([4.0, 2.0], [float("nan")] * 2) == "loss 4.000 → 2.000, bits/frame nan → nan (step 1 → step 2 of 2)"


def test_cli_log_and_damaged_resume(tmp_path, capsys):
    for i, kind in enumerate(["smooth", "walk"]):
        np.save(tmp_path / f"{kind}.npy", synthetic_latents(kind, 12, 6, 16, seed=i))
    out = tmp_path / "m.safetensors"
    args = ["train-latent-codec", str(tmp_path / "smooth.npy"), str(tmp_path / "walk.npy"), "--out", str(out),
            "--steps", "3", "--batch", "2", "--hidden", "8", "--step-presets", "0.5,1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    losses, bits = training_history(out)
    assert len(losses) == len(bits) == 3 and losses[0] != losses[2]
    assert f"loss {losses[0]:.3f} → {losses[2]:.3f}, bits/frame {bits[0]:.0f} → {bits[2]:.0f}" in text
    assert "encoder not recorded" in text
    ckpt = checkpoint_path(out)
    for content, needle in ((ckpt.read_bytes()[:200], "truncated or corrupt"),
                            (None, "not a train-latent-codec checkpoint (no trainer")):
        if content is None:
            torch.save({"step": 3}, ckpt)
        else:
            ckpt.write_bytes(content)
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "weights_only" not in err[0], err
    state = {"trainer": {}, "opt": {}, "aux_opt": {}, "step": 3, "losses": [1.0], "config": "{not json", "shape": [6, 16]}
    torch.save(state, ckpt)
    assert main([*args, "--resume"]) == 2
    assert "damaged train-latent-codec checkpoint" in capsys.readouterr().err


def test_codec_records_the_encoder_of_its_latents(tmp_path):
    folder = tmp_path / "lat"
    folder.mkdir()
    for name in ("a.npy", "b.npy"):
        np.save(folder / name, synthetic_latents("smooth", 6, 6, 16))
    (folder / "latents.json").write_text(json.dumps({"encoder_id": "e" * 64, "clips": {"a.npy": 6, "b.npy": 6}}))
    files = find_latent_files([folder])
    assert latents_encoder_id(files) == "e" * 64
    np.save(tmp_path / "c.npy", synthetic_latents("walk", 6, 6, 16))
    with pytest.raises(InputError, match="latents of different encoders mixed: eeeeeeeeeeee… .2 files.*no recorded encoder"):
        latents_encoder_id(find_latent_files([folder, tmp_path / "c.npy"]))
    assert latents_encoder_id(find_latent_files([tmp_path / "c.npy"])) is None
    train_latent_codec(load_latent_sequences([folder]), tmp_path / "m.safetensors", TrainConfig(steps=1, **CFG),
                       progress=False, info={"encoder_id": "e" * 64})
    assert load_latent_codec(tmp_path / "m.safetensors").info["encoder_id"] == "e" * 64


def test_training_fits_temporal_context_tables_unless_told_not_to(tmp_path):
    model, _ = train_latent_codec(_seqs(), tmp_path / "m.safetensors", TrainConfig(steps=2, **CFG), progress=False)
    back = load_latent_codec(tmp_path / "m.safetensors")
    assert len(back.context_tables) == len(back.steps) == 2 and back.context_tables[0].num_classes == 8
    assert all(np.array_equal(a.freqs, b.freqs) for a, b in zip(model.context_tables, back.context_tables))
    train_latent_codec(_seqs(), tmp_path / "n.safetensors", TrainConfig(steps=2, **CFG), progress=False, context_classes=0)
    assert load_latent_codec(tmp_path / "n.safetensors").context_tables == []
    with pytest.raises(InputError, match="context classes must be between 1 and 64, got 65"):
        train_latent_codec(_seqs(), tmp_path / "o.safetensors", TrainConfig(steps=1, **CFG), progress=False,
                           context_classes=65)
