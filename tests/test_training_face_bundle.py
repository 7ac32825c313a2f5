"""From a face-model checkpoint to a bundle: clip latents for the codec, then generator + encoder + codec."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.bundle import bundle_info, load_bundle
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.cli import main
from sganc_stream.models import FastEncoder, Generator, GeneratorConfig, load_checkpoint
from sganc_stream.training.face_bundle import build_face_bundle, encode_clip_latents, load_face_models, load_face_source
from sganc_stream.training.face_data import INDEX_FIELDS
from sganc_stream.training.face_model import FaceModelTrainer, TrainSettings, train_face_model
from sganc_stream.training.latent_codec import TrainConfig, load_latent_sequences, train_latent_codec
from sganc_stream.training.latent_files import latents_encoder_id
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


def test_manifest_resume_and_codec_fit(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    """latents.json names the encoder; the codec keeps it; a bundle with another encoder refuses it unless forced."""
    data, ckpt = prepared
    out = tmp_path / "latents"
    files = encode_clip_latents(ckpt, data, out, progress=False)
    manifest = json.loads((out / "latents.json").read_text())
    ema_id = load_face_source(ckpt).encoder_id
    assert manifest["encoder_id"] == ema_id and manifest["clips"] == {f.name: 12 for f in files}
    stamps = [f.stat().st_mtime_ns for f in files]
    assert encode_clip_latents(ckpt, data, out, progress=False) == files  # resumed: nothing re-encoded
    assert [f.stat().st_mtime_ns for f in files] == stamps
    with pytest.raises(InputError, match="holds latents of encoder"):
        encode_clip_latents(ckpt, data, out, ema=False, progress=False)  # the raw encoder is another encoder
    stray = tmp_path / "stray"
    stray.mkdir()
    np.save(stray / "x.npy", np.zeros((2, 10, 64), np.float32))
    with pytest.raises(InputError, match="not written by encode-face-clips"):
        encode_clip_latents(ckpt, data, stray, progress=False)

    codec = tmp_path / "codec.safetensors"
    train_latent_codec(load_latent_sequences(files), codec, TrainConfig(steps=2, batch=4, hidden=8), progress=False,
                       info={"encoder_id": latents_encoder_id(files)})
    with pytest.raises(InputError, match=f"trained on W\\+ of encoder {ema_id[:12]}.*--force"):
        build_face_bundle(ckpt, codec, tmp_path / "raw.safetensors", ema=False)
    assert not (tmp_path / "raw.safetensors").exists()
    build_face_bundle(ckpt, codec, tmp_path / "raw.safetensors", ema=False, force=True)
    fit = load_bundle(tmp_path / "raw.safetensors").config["codec_fit"]
    assert fit["forced"] and fit["codec_encoder_id"] == ema_id != fit["encoder_id"]
    assert bundle_info(tmp_path / "raw.safetensors")["parts"]["codec"]["fit"] == "another encoder (forced)"
    model_id = build_face_bundle(ckpt, codec, tmp_path / "ema.safetensors")  # float16 storage keeps the id
    ema_bundle = load_bundle(tmp_path / "ema.safetensors")
    assert ema_bundle.model_id == model_id and ema_bundle.encoder_id == ema_id and "codec_fit" not in ema_bundle.config
    # a bundle given as the model keeps its precision default (float32) and its own licence
    build_face_bundle(tmp_path / "ema.safetensors", codec, tmp_path / "again.safetensors")
    again = load_bundle(tmp_path / "again.safetensors")
    assert again.tensors["generator.input.input"].dtype == torch.float32 and again.encoder_id == ema_id
    assert again.config["licence"] == ema_bundle.config["licence"]


def test_unusable_model_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pt")
    torch.save({"g_ema": Generator(GeneratorConfig(size=64, channel_multiplier=1)).state_dict()}, tmp_path / "g.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "g.pt").read_bytes()[:1000])
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "faces.npy", np.zeros((1, 64, 64, 3), np.uint8))
    (data / "index.csv").write_text(",".join(INDEX_FIELDS) + "\n0,clips/a.mp4,0,clip:a,train,clip\n")
    for model, needle in (("evil.pt", "refused: unpickling this file would run code (it imports posix.mkdir"),
                          ("cut.pt", "truncated or corrupt"), ("g.pt", "holds a generator but no encoder")):
        for argv in (["encode-face-clips", str(data), "--model", str(tmp_path / model), "--out", str(tmp_path / "o")],
                     ["build-face-bundle", "--model", str(tmp_path / model), "--codec", "c", "--out", str(tmp_path / "b")]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and needle in err[0] and "weights_only" not in err[0], err
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_init_starts_a_new_joint_run_from_a_bundles_weights(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    """What a lost run resumes from: the shipped bundle's G and E, fresh optimizers, its name kept across chunks."""
    data, ckpt = prepared
    files = encode_clip_latents(ckpt, data, tmp_path / "latents")
    codec = tmp_path / "codec.safetensors"
    train_latent_codec(load_latent_sequences(files), codec, TrainConfig(steps=4, batch=4, hidden=8), progress=False)
    bundle = tmp_path / "bundle.safetensors"
    build_face_bundle(ckpt, codec, bundle)
    loaded = load_face_source(bundle, ema=False)
    settings = TrainSettings(mode="joint", steps=2, batch=4)
    trainer = FaceModelTrainer(TINY, settings)
    trainer.start_from(loaded.generator, loaded.encoder, str(bundle))
    for ours, theirs in ((trainer.g, loaded.generator), (trainer.g_ema, loaded.generator),
                         (trainer.e, loaded.encoder), (trainer.e_ema, loaded.encoder)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert trainer.step_count == 0 and trainer.cpu_seconds == 0.0
    init = (loaded.generator, loaded.encoder, str(bundle))
    run = tmp_path / "run"
    first = train_face_model(_faces(8), run, TINY, settings, progress=False, init=init)
    assert first.step_count == 2 and first.init_from == str(bundle)
    with pytest.raises(InputError, match="exists: --init starts a new run"):
        train_face_model(_faces(8), run, TINY, settings, progress=False, init=init)
    later = train_face_model(_faces(8), run, TINY, TrainSettings(mode="joint", steps=3, batch=4), progress=False,
                             resume=True)
    assert later.step_count == 3 and later.init_from == str(bundle)
    wider = dataclasses.replace(TINY, enc_base_channels=16)
    with pytest.raises(InputError, match="its encoder .* differs"):
        FaceModelTrainer(wider, settings).start_from(loaded.generator, loaded.encoder, str(bundle))
    with pytest.raises(InputError, match="mode 'gan' cannot use it"):
        FaceModelTrainer(TINY, TrainSettings(mode="gan", batch=4)).start_from(loaded.generator, loaded.encoder, "x")


def test_init_outside_joint_mode_is_one_line_before_the_data_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-face-model", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"), "--mode", "encoder",
                 "--init", str(tmp_path / "model.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "--mode joint" in err[0], err
    assert not (tmp_path / "run").exists()
