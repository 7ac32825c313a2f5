"""The paper's own system from official-format checkpoints, through the commands README "Use the official
checkpoints" documents: weights bundle → prepare-faces at the encoder's size → encode-face-clips + train-latent-codec
+ build-face-bundle (or complete-bundle) → transcode / decode / inspect / transcode-dataset --layout mead.

The pSp and e4e files are built by the recipe of ../shared/reference in the official format with a 64 px decoder
(``psp_checkpoint(size=64)``: ``output_size`` / ``stylegan_size`` 64, the full IR-SE50 encoder with 10 style heads,
about 180 M values, 0.7 GB each), so everything runs on a CPU in minutes; the 1024 px path differs only in sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from face_data import CLIPS, shared_path
from sganc_stream.bundle import bundle_config, load_bundle
from sganc_stream.cli import main
from sganc_stream.models import load_checkpoint
from sganc_stream.models.checkpoint import NVIDIA_NC
from sganc_stream.models.recipe import psp_checkpoint
from sganc_stream.training.latent_codec import training_history
from sganc_stream.video import read_frames, write_frames

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
TRAIN_CLIPS = ("dreamtalk_mead/M030_front_angry_level3_001.mp4", "dreamtalk_mead/M030_front_happy_level3_001.mp4")
TEST_CLIP = "dreamtalk_mead/M030_front_neutral_level1_001.mp4"
CODEC = ["--steps", "4", "--batch", "2", "--hidden", "8", "--quiet"]


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"sganc-stream {command}: error: "), err
    assert "weights_only" not in err[0] and "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """psp.pt, e4e.pt (same recipe weights, opts differ) and a prepare-faces folder of two MEAD clips at 256 px."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    clips = [shared_path(CLIPS, name) for name in (*TRAIN_CLIPS, TEST_CLIP)]
    root = tmp_path_factory.mktemp("official")
    ckpt = psp_checkpoint(REFERENCE / "layouts", seed=1, size=64)
    torch.save(ckpt, root / "psp_ffhq_encode.pt")
    ckpt["opts"] = {"encoder_type": "Encoder4Editing", "input_nc": 3, "start_from_latent_avg": True, "stylegan_size": 64}
    torch.save(ckpt, root / "e4e_ffhq_encode.pt")
    del ckpt
    (root / "data" / "clips").mkdir(parents=True)
    for clip in clips[:2]:
        (root / "data" / "clips" / clip.name).symlink_to(clip)
    assert main(["prepare-faces", str(root / "faces"), "--data", str(root / "data"), "--size", "256",
                 "--clip-max-frames", "2", "--clip-val-fraction", "0"]) == 0
    return {"root": root, "psp": root / "psp_ffhq_encode.pt", "e4e": root / "e4e_ffhq_encode.pt",
            "faces": root / "faces", "clip": clips[2]}


def test_psp_step_by_step(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    psp, clip = files["psp"], files["clip"]
    partial = tmp_path / "psp.safetensors"
    assert main(["weights", "bundle", str(psp), str(partial)]) == 0
    out = capsys.readouterr().out
    assert "no latent codec yet: cannot transcode" in out and "complete-bundle" in out
    assert main(["transcode", "--model", str(partial), "--quiet", str(clip), str(tmp_path / "x.sgnc")]) == 2
    assert "complete-bundle" in one_line_error(capsys, "transcode")

    # latents of the training clips, at the encoder's 256 px input; the manifest names the encoder
    latents = tmp_path / "latents"
    assert main(["encode-face-clips", str(files["faces"]), "--model", str(partial), "--out", str(latents), "--quiet"]) == 0
    manifest = json.loads((latents / "latents.json").read_text())
    pt_model = load_checkpoint(psp)
    assert manifest["encoder_id"] == pt_model.encoder_id == load_checkpoint(partial).encoder_id
    assert manifest["encoder_type"] == "psp" and manifest["input_size"] == 256
    npys = sorted(latents.glob("*.npy"))
    assert len(npys) == 2 and all(np.load(f).shape == (2, 10, 512) for f in npys)
    stamps = [f.stat().st_mtime_ns for f in npys]
    assert main(["encode-face-clips", str(files["faces"]), "--model", str(psp), "--out", str(latents), "--quiet"]) == 0
    assert [f.stat().st_mtime_ns for f in npys] == stamps  # same encoder (the .pt itself): resumed, nothing redone

    codec = tmp_path / "codec.safetensors"
    assert main(["train-latent-codec", str(latents), "--out", str(codec), "--steps", "4", "--batch", "2",
                 "--hidden", "8"]) == 0
    out = capsys.readouterr().out
    losses, bits = training_history(codec)
    first, last = np.mean(losses[:2]), np.mean(losses[2:])
    assert f"loss {first:.3f} → {last:.3f}" in out and f"bits/frame {np.mean(bits[:2]):.0f} → {np.mean(bits[2:]):.0f}" in out
    assert f"for encoder {pt_model.encoder_id[:12]}" in out
    assert bundle_config(codec)["codec"]["info"]["encoder_id"] == pt_model.encoder_id

    full = tmp_path / "psp_full.safetensors"
    assert main(["build-face-bundle", "--model", str(partial), "--codec", str(codec), "--out", str(full)]) == 0
    assert "transcode and decode" in capsys.readouterr().out
    bundle = load_bundle(full)
    assert bundle.config["licence"] == NVIDIA_NC and "non-commercial" in NVIDIA_NC
    assert {t.dtype for k, t in bundle.tensors.items() if not k.startswith("codec.")} == {torch.float32}
    assert bundle.encoder_id == pt_model.encoder_id
    assert main(["inspect", str(full)]) == 0
    out = capsys.readouterr().out
    assert f"model id {bundle.model_id}" in out and "psp encoder, input 256 px" in out
    assert "StyleGAN2 64 px, W+ 10x512" in out and "matches the encoder" in out and "non-commercial" in out

    # transcode a 160 px copy of a MEAD clip: its faces (~180 px FFHQ quads) are enlarged for the 256 px encoder,
    # which the report says; quality is scored at the face's own size (here capped by G's 64 px output)
    small = tmp_path / "small.mkv"
    write_frames(small, [cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA) for f in read_frames(clip, 3)], 25.0,
                 lossless=True)
    sgnc, recon, report = tmp_path / "c.sgnc", tmp_path / "recon.mkv", tmp_path / "report.json"
    assert main(["transcode", "--model", str(full), "--lossless", "--quiet", "--identity-every", "3",
                 "--recon", str(recon), "--aligned", str(tmp_path / "aligned.mkv"), "--report", str(report),
                 str(small), str(sgnc)]) == 0
    assert "enlarged" in capsys.readouterr().out
    rep = json.loads(report.read_text())
    assert rep["frames"] == 3 and rep["alignment"]["size"] == 256 and rep["alignment"]["output_size"] == 64
    face = rep["alignment"]["source_face_px"]["median"]
    assert 64 < face < 256 and rep["alignment"]["upscale"] == pytest.approx(256 / face, abs=1e-3)
    assert rep["quality"]["size"] == 64 and rep["quality"]["vs_aligned"]["size"] == [64, 64]
    assert read_frames(tmp_path / "aligned.mkv")[0].shape == (256, 256, 3)
    assert main(["decode", "--model", str(full), "--lossless", "--quiet", str(sgnc), str(tmp_path / "d.mkv")]) == 0
    decoded, wanted = np.stack(read_frames(tmp_path / "d.mkv")), np.stack(read_frames(recon))
    assert decoded.shape == (3, 64, 64, 3) and np.array_equal(decoded, wanted)
    capsys.readouterr()
    assert main(["inspect", str(sgnc)]) == 0
    assert f"model {bundle.model_id}" in capsys.readouterr().out

    # a MEAD tree given as flat MEAD-named files; a file fitting no layout is listed, not silently skipped
    mead = tmp_path / "mead"
    mead.mkdir()
    (mead / "M030_front_neutral_level1_001.mp4").symlink_to(clip)
    (mead / "notes.mp4").symlink_to(clip)
    assert main(["transcode-dataset", "--layout", "mead", "--model", str(full), "--max-frames", "1", "--no-quality",
                 "--quiet", str(mead), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "1 video file(s)" in captured.err and "notes.mp4" in captured.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["done"] == 1 and summary["unmatched"] == ["notes.mp4"]
    assert (tmp_path / "out" / "M030_front_neutral_level1_001.sgnc").is_file()


def test_e4e_one_command_and_fit_checks(files: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    e4e, psp = files["e4e"], files["psp"]
    partial = tmp_path / "e4e.safetensors"
    assert main(["weights", "bundle", str(e4e), str(partial), "--encoder-type", "psp"]) == 2
    assert "opts say encoder_type 'Encoder4Editing' (e4e), not psp" in one_line_error(capsys, "weights")
    assert not partial.exists()
    assert main(["weights", "bundle", str(e4e), str(partial)]) == 0
    assert bundle_config(partial)["encoder"]["type"] == "e4e"

    full = tmp_path / "e4e_full.safetensors"
    args = ["complete-bundle", str(partial), "--faces", str(files["faces"]), "--out", str(full), *CODEC]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert all(f"{k}/3" in out for k in (1, 2, 3)) and "transcode and decode" in out
    work = tmp_path / "e4e_full.safetensors.work"
    stamps = [f.stat().st_mtime_ns for f in sorted((work / "latents").glob("*.npy"))]
    assert main(args) == 0  # again: latents resumed, codec training already at its last step
    capsys.readouterr()
    assert [f.stat().st_mtime_ns for f in sorted((work / "latents").glob("*.npy"))] == stamps
    assert len(training_history(work / "codec.safetensors")[0]) == 4
    e4e_id = load_bundle(full).encoder_id
    assert e4e_id == load_checkpoint(e4e).encoder_id != load_checkpoint(psp).encoder_id

    # the e4e codec with the pSp encoder (same weights, other encoder type): refused (--force: unit tests)
    mixed = tmp_path / "mixed.safetensors"
    assert main(["build-face-bundle", "--model", str(psp), "--codec", str(work / "codec.safetensors"),
                 "--out", str(mixed)]) == 2
    msg = one_line_error(capsys, "build-face-bundle")
    assert f"trained on W+ of encoder {e4e_id[:12]}" in msg and "--force" in msg and not mixed.exists()

    sgnc = tmp_path / "e.sgnc"
    assert main(["transcode", "--model", str(full), "--max-frames", "2", "--lossless", "--quiet",
                 "--recon", str(tmp_path / "r.mkv"), str(files["clip"]), str(sgnc)]) == 0
    assert main(["decode", "--model", str(full), "--lossless", "--quiet", str(sgnc), str(tmp_path / "d.mkv")]) == 0
    assert np.array_equal(np.stack(read_frames(tmp_path / "d.mkv")), np.stack(read_frames(tmp_path / "r.mkv")))
