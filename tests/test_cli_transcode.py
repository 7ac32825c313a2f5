"""`sganc-stream transcode | decode | transcode-dataset` end to end, and every bad input as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from face_data import CLIPS, STEADY_CLIP, shared_path
from pipeline_data import tiny_bundle, variant_bundle
from sganc_stream.bitstream.container import read_container
from sganc_stream.cli import main
from sganc_stream.video import read_frames, write_frames
from video_data import truncated_copy, write_stored


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sganc-stream {command}: error: "), err
    return err[0]


def test_transcode_decode_equality_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    model, out = str(tiny_bundle()), tmp_path / "c.sgnc"
    rc = main(["transcode", "--model", model, "--max-frames", "4", "--batch", "2", "--lossless", "--quiet",
               "--recon", str(tmp_path / "recon.mkv"), "--aligned", str(tmp_path / "aligned.mkv"),
               "--report", str(tmp_path / "report.json"), "--paste-back", "--identity-every", "2", str(clip), str(out)])
    assert rc == 0 and "kbps" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    container = read_container(out)
    assert report["bytes"] == out.stat().st_size
    assert report["frames"] == len(container.packets) == 4 == len(report["per_frame"])
    assert [f["bytes"] for f in report["per_frame"]] == container.record_bytes
    assert [f["type"] for f in report["per_frame"]] == [p.type.label for p in container.packets]
    assert report["fps"] == container.header.fps == 25.0
    # auto: the tiny model has temporal-context tables but no record of the encoder they were fitted for, so the
    # differences use its tables and the paper's open loop (no damping, rounding to nearest)
    assert (report["stream"]["context"], report["stream"]["drift_damping"], report["stream"]["rounding_offset"]) == \
        ("temporal", 0.0, 0.5)
    assert report["kbps"] == pytest.approx(8 * report["bytes"] / 4 * 25 / 1000)
    for ref in ("vs_aligned", "vs_projected"):
        assert {"psnr", "ms_ssim", "identity_distance"} <= report["quality"][ref].keys()
    assert report["speed"]["encode_fps"] > 0 and report["speed"]["decode_fps"] > 0
    # the tiny model aligns at 64 px (its encoder's size); the clip's faces are larger, so nothing is enlarged
    face = report["alignment"]["source_face_px"]
    assert report["alignment"]["size"] == report["alignment"]["output_size"] == 64 == report["quality"]["size"]
    assert 64 < face["min"] <= face["median"] <= face["max"] and report["alignment"]["upscale"] < 1
    assert all(f["face_px"] > 64 for f in report["per_frame"])
    assert len(read_frames(tmp_path / "aligned.mkv")) == 4
    pasted = read_frames(tmp_path / "c.pasted.mp4")
    assert len(pasted) == 4 and pasted[0].shape == read_frames(clip, 1)[0].shape

    assert main(["decode", "--model", model, "--batch", "2", "--lossless", "--quiet", str(out),
                 str(tmp_path / "decoded.mkv")]) == 0
    recon, decoded = np.stack(read_frames(tmp_path / "recon.mkv")), np.stack(read_frames(tmp_path / "decoded.mkv"))
    assert recon.shape == (4, 64, 64, 3) and np.array_equal(recon, decoded)
    # a partial download: the complete frames, and one warning line saying how many of the declared ones
    cut = tmp_path / "cut.sgnc"
    cut.write_bytes(out.read_bytes()[:container.header_bytes + sum(container.record_bytes[:2]) + 5])
    capsys.readouterr()
    assert main(["decode", "--model", model, "--batch", "2", "--lossless", "--quiet", str(cut), str(tmp_path / "cut.mkv")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"sganc-stream decode: warning: {cut} ended early: no end packet; it "
                                                 "holds 2 complete frames of the 4 its header declares (the file's "
                                                 "checksum cannot be checked)"]
    assert "2 frames at 25 fps decoded" in captured.out
    assert np.array_equal(np.stack(read_frames(tmp_path / "cut.mkv")), recon[:2])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_decode_refuses_another_model(runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One line for a stream of another model; with ONNX Runtime before a first run exports that model's graphs."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SGANC_CACHE_DIR", str(tmp_path / "cache"))
    clip = shared_path(CLIPS, STEADY_CLIP)
    out = tmp_path / "c.sgnc"
    assert main(["transcode", "--model", str(tiny_bundle()), "--max-frames", "1", "--quiet", str(clip), str(out)]) == 0
    other = variant_bundle(tiny_bundle(), tmp_path / "other.safetensors")
    capsys.readouterr()
    assert main(["decode", "--runtime", runtime, "--model", str(other), "--quiet", str(out), str(tmp_path / "d.mp4")]) == 2
    assert "stream was made with model" in _one_line_error(capsys, "decode")
    assert not (tmp_path / "d.mp4").exists() and not (tmp_path / "cache").exists()


def test_unreadable_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert main(["transcode", "--model", str(tiny_bundle()), "--quiet", str(bad), str(tmp_path / "x.sgnc")]) == 2
    assert _one_line_error(capsys, "transcode") == (  # the reason alone: no errno, no second copy of the name
        f"sganc-stream transcode: error: cannot read video {bad}: Invalid data found when processing input")
    assert sorted(os.listdir(tmp_path)) == ["bad.mp4"]


def test_clip_without_a_face(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = tmp_path / "blank.mp4"
    write_frames(blank, [np.full((96, 96, 3), 128, np.uint8)] * 3, 25.0)
    rc = main(["transcode", "--model", str(tiny_bundle()), "--quiet", "--recon", str(tmp_path / "r.mp4"),
               "--report", str(tmp_path / "r.json"), str(blank), str(tmp_path / "x.sgnc")])
    assert rc == 2 and f"no face found in {blank}" in _one_line_error(capsys, "transcode")
    assert sorted(os.listdir(tmp_path)) == ["blank.mp4"]


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    rc = main(["transcode", "--model", str(tiny_bundle()), "--quiet", str(clip), str(tmp_path / "no" / "x.sgnc")])
    assert rc == 2 and "does not exist" in _one_line_error(capsys, "transcode")


def test_a_stream_must_be_named_sgnc_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``transcode clip.mp4 out.mp4`` would write an SGNC stream named like a video: refused before the model loads."""
    clip = shared_path(CLIPS, STEADY_CLIP)
    rc = main(["transcode", "--model", str(tmp_path / "none.safetensors"), "--quiet", str(clip),
               str(tmp_path / "out.mp4")])
    assert rc == 2 and _one_line_error(capsys, "transcode") == (
        f"sganc-stream transcode: error: cannot write {tmp_path / 'out.mp4'}: an SGNC stream's name must end in .sgnc; "
        "for a video of the decoded faces pass --recon out.mp4")
    assert os.listdir(tmp_path) == []


def test_help_says_faceless_frames_are_no_face_packets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["transcode", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "coded as a no-face packet" in text and "are not coded" not in text


def test_disk_full(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)

    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    rc = main(["transcode", "--model", str(tiny_bundle()), "--quiet", "--max-frames", "1", "--aligned",
               str(tmp_path / "a.mp4"), str(clip), str(tmp_path / "x.sgnc")])
    assert rc == 2 and "No space left on device" in _one_line_error(capsys, "transcode")
    assert os.listdir(tmp_path) == []


def test_missing_model_and_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--model", str(tmp_path / "none.safetensors"), str(tmp_path / "x.sgnc"),
                 str(tmp_path / "d.mp4")]) == 2
    assert "no such" in _one_line_error(capsys, "decode")


def test_dataset_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "FP006734MD02.mp4").symlink_to(clip)
    args = ["transcode-dataset", "--model", str(tiny_bundle()), "--layout", "filmpac", "--max-frames", "1",
            "--no-quality", "--quiet", str(tmp_path / "in"), str(tmp_path / "out")]
    assert main(args) == 0
    assert "1/1 clips done (0 already done)" in capsys.readouterr().out
    assert main(args) == 0
    assert "1/1 clips done (1 already done)" in capsys.readouterr().out
    assert (tmp_path / "out" / "FP006734MD02.sgnc").is_file() and (tmp_path / "out" / "clips.csv").is_file()


@pytest.mark.parametrize("command,output,match", [
    ("transcode", ["--recon", "r.avi"], "AVI cannot hold presentation times"),
    ("transcode", ["--aligned", "a.gif", "--lossless"], "256 colours"),
    ("decode", ["d.flv"], "unknown suffix '.flv'"),
])
def test_unsupported_video_outputs_are_refused_before_the_model_loads(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      command: str, output: list[str],
                                                                      match: str) -> None:
    """The model path does not exist: the suffix error proves the check comes before any work."""
    missing = str(tmp_path / "no-model.safetensors")
    paths = [str(tmp_path / a) if a.endswith((".avi", ".gif", ".flv")) else a for a in output]
    args = ([command, "--model", missing, *paths, str(tmp_path / "in.mp4"), str(tmp_path / "x.sgnc")]
            if command == "transcode" else [command, "--model", missing, "--lossless", str(tmp_path / "x.sgnc"),
                                            *paths])
    assert main(args) == 2
    assert match in _one_line_error(capsys, command) and os.listdir(tmp_path) == []


def test_browser_webm_in_and_every_output_format_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A VP9 WebM as browsers record it; outputs named .webm, .gif, .png come out in those formats."""
    clip = tmp_path / "browser.webm"
    write_frames(clip, read_frames(shared_path(CLIPS, STEADY_CLIP), 3), 25.0)
    model, out = str(tiny_bundle()), tmp_path / "c.sgnc"
    assert main(["transcode", "--model", model, "--quiet", "--recon", str(tmp_path / "recon.webm"), "--aligned",
                 str(tmp_path / "aligned.gif"), str(clip), str(out)]) == 0
    assert main(["decode", "--model", model, "--quiet", "--lossless", str(out), str(tmp_path / "decoded.png")]) == 0
    assert main(["decode", "--model", model, "--quiet", str(out), str(tmp_path / "decoded.webm")]) == 0
    capsys.readouterr()
    import av

    for name, fmt in [("recon.webm", "vp9"), ("aligned.gif", "gif"), ("decoded.png", "apng"), ("decoded.webm", "vp9")]:
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].codec_context.name == fmt
        assert len(read_frames(tmp_path / name)) == 3


def test_threads_option_and_truncated_input_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full, cut = tmp_path / "full.mp4", tmp_path / "cut.mp4"
    write_stored(full, read_frames(shared_path(CLIPS, STEADY_CLIP), 12), options={"movflags": "faststart"})
    truncated_copy(full, cut, 0.5)
    model = str(tiny_bundle())
    assert main(["transcode", "--model", model, "--quiet", "--report", str(tmp_path / "r.json"), str(cut),
                 str(tmp_path / "c.sgnc")]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith(f"sganc-stream transcode: warning: {cut} ended early: ")
    assert warning[0].endswith("of the 12 frames its header declares could be decoded")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["speed"]["torch_threads"] == 1 and report["input_frames"]["declared"] == 12
    assert report["quality"]["vs_aligned"]["identity_every"] == 10  # identity is sparse by default
    assert f"{report['frames']} frames" in captured.out and "(on 1 frame in 10)" in captured.out
    assert main(["transcode", "--model", model, "--quiet", "--threads", "2", "--report", str(tmp_path / "r.json"),
                 str(full), str(tmp_path / "c.sgnc")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["speed"]["torch_threads"] == 2
    assert "warning" not in capsys.readouterr().err
    assert main(["decode", "--model", model, "--threads", "0", str(tmp_path / "c.sgnc"), str(tmp_path / "d.mp4")]) == 2
    assert "--threads must be at least 1" in _one_line_error(capsys, "decode")


def test_late_face_start_offset_and_search_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """face_appears_after_60_frames.mp4, small: the lead-in is searched, said, recorded and decoded in line."""
    faces = read_frames(shared_path(CLIPS, STEADY_CLIP), 3)
    late = tmp_path / "late.mp4"
    write_frames(late, [np.full_like(faces[0], 90)] * 4 + faces, 25.0)
    model, out = str(tiny_bundle()), tmp_path / "late.sgnc"
    assert main(["transcode", "--model", model, "--max-frames", "3", "--quiet", str(late), str(out)]) == 2
    assert f"no face found in {late}: searched 3 of 7 frames (0.12 s)" in _one_line_error(capsys, "transcode")
    assert main(["transcode", "--model", model, "--quiet", str(late), str(out)]) == 0
    said = capsys.readouterr().out
    assert "4 frames without a face sent as no-face packets" in said and "first face at frame 4 (0.16 s)" in said
    assert main(["decode", "--model", model, "--quiet", str(out), str(tmp_path / "d.mkv")]) == 0
    assert "7 frames at 25 fps decoded, 4 of them without a face" in capsys.readouterr().out
    decoded = read_frames(tmp_path / "d.mkv")
    assert len(decoded) == 7 and all(f.max() < 20 for f in decoded[:4])  # black (H.264) where the source has no face


def test_altered_payload_is_an_error_not_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A payload altered and the file's CRC recomputed: the check value makes it a one-line error."""
    from sganc_stream.bitstream.container import encode_container
    from sganc_stream.bitstream.packet import Packet

    out = tmp_path / "c.sgnc"
    assert main(["transcode", "--model", str(tiny_bundle()), "--max-frames", "2", "--quiet", "--inter-context",
                 "factorized", str(shared_path(CLIPS, STEADY_CLIP)), str(out)]) == 0
    c = read_container(out)
    p = c.packets[1]
    altered = bytearray(p.payload)
    altered[1] ^= 0x10  # low in the stack: decoded last, where escapes and the check value sit
    bad = tmp_path / "bad.sgnc"
    bad.write_bytes(encode_container(c.header, [c.packets[0], Packet(p.type, p.seq, p.frame, p.timestamp_ms,
                                                                     bytes(altered))]))
    capsys.readouterr()
    assert main(["decode", "--model", str(tiny_bundle()), "--quiet", str(bad), str(tmp_path / "d.mp4")]) == 2
    assert "corrupted payload" in _one_line_error(capsys, "decode")
    assert not (tmp_path / "d.mp4").exists()


def test_transcode_with_a_target_rate_writes_v4_that_decodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--target-kbps: a version 4 stream whose steps are the model's presets; decode reproduces transcode's
    reconstruction (the pipeline's own decoder reads v4); --step with it is one line, exit 2, nothing written."""
    clip, out = shared_path(CLIPS, STEADY_CLIP), tmp_path / "rc.sgnc"
    model = str(tiny_bundle())
    assert main(["transcode", "--model", model, "--max-frames", "4", "--target-kbps", "20", "--lossless", "--quiet",
                 "--inter-context", "factorized", "--recon", str(tmp_path / "r.mkv"), "--report",
                 str(tmp_path / "rc.json"), str(clip), str(out)]) == 0
    header = read_container(out).header
    assert header.version == 4 and len(header.steps) >= 2 and header.step == header.steps[0]
    assert "chosen by rate control" in capsys.readouterr().out  # the steps used are named, not the unit step
    report = json.loads((tmp_path / "rc.json").read_text())  # each frame's step: what rate control chose
    assert {f["step"] for f in report["per_frame"]} <= set(header.steps) and len(report["per_frame"]) == 4
    assert main(["decode", "--model", model, "--lossless", "--quiet", str(out), str(tmp_path / "d.mkv")]) == 0
    assert np.array_equal(read_frames(tmp_path / "r.mkv"), read_frames(tmp_path / "d.mkv"))
    capsys.readouterr()
    bad = tmp_path / "bad.sgnc"
    assert main(["transcode", "--model", model, "--target-kbps", "20", "--step", "1", "--quiet", str(clip), str(bad)]) == 2
    assert "exclude each other" in _one_line_error(capsys, "transcode") and not bad.exists()


def test_a_missed_rate_target_gets_one_line_with_the_reason_the_report_shows() -> None:
    from sganc_stream.cli.transcode import rate_notes
    frames = lambda *steps: [{"step": s} for s in steps] + [{"step": None}]  # noqa: E731 (a no-face frame: no step)
    assert rate_notes({"kbps": 37.5, "per_frame": frames(16.0)}, None) == []
    assert rate_notes({"kbps": 21.5, "per_frame": frames(16.0)}, 20.0) == []  # within 10 %
    (low,) = rate_notes({"kbps": 37.5, "per_frame": frames(16.0, 16.0)}, 20.0, True)
    assert "--target-kbps 20" in low and "37.50" in low and "coarsest" in low and "Δ = 16" in low
    assert "--residual-table empirical" in low  # Irwin–Hall asked for, the model's table unused: it shrinks with Δ
    (no_table,) = rate_notes({"kbps": 37.5, "per_frame": frames(16.0, 16.0)}, 20.0)  # none to suggest
    assert "coarsest" in no_table and "--residual-table" not in no_table
    (mixed,) = rate_notes({"kbps": 22.3, "per_frame": frames(8.0, 16.0)}, 20.0)
    assert "fixed costs" in mixed and "coarsest" not in mixed and "--residual-table" not in mixed
    (high,) = rate_notes({"kbps": 100.0, "per_frame": frames(0.5)}, 400.0)
    assert "finest" in high and "--residual-table" not in high


def test_identity_every_zero_is_refused_by_its_option_name_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcode", "--model", str(tmp_path / "no-model.safetensors"), "--identity-every", "0",
                 str(tmp_path / "in.mp4"), str(tmp_path / "x.sgnc")]) == 2
    assert "--identity-every must be at least 1" in _one_line_error(capsys, "transcode")
    assert os.listdir(tmp_path) == []


def test_sigterm_mid_transcode_is_one_line_and_leaves_no_partial_output(tmp_path: Path) -> None:
    """``kill`` (SIGTERM) while transcode writes: exit status 143, one line, and its partial files are removed, as
    for Ctrl-C (Python's default SIGTERM action would end the process at once and leave the ``.part`` files)."""
    out = tmp_path / "out"
    out.mkdir()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "sganc_stream", "transcode", "--quiet", str(shared_path(CLIPS, STEADY_CLIP)),
                             str(out / "x.sgnc"), "--recon", str(out / "x.mp4")], cwd=root, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while proc.poll() is None and not any(out.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first output file is being written
    assert proc.poll() is None and any(out.iterdir()), "transcode ended or wrote nothing before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["sganc-stream transcode: terminated"]
    assert list(out.iterdir()) == []


def test_decode_with_a_latent_codec_says_it_is_not_a_face_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled synthetic latent codec given as --model of a video command: one line saying what it is."""
    from sganc_stream.assets import DEFAULT_LATENT_CODEC

    out = tmp_path / "c.sgnc"
    assert main(["transcode", "--model", str(tiny_bundle()), "--max-frames", "1", "--quiet",
                 str(shared_path(CLIPS, STEADY_CLIP)), str(out)]) == 0
    capsys.readouterr()
    assert main(["decode", "--model", str(DEFAULT_LATENT_CODEC), "--quiet", str(out), str(tmp_path / "d.mp4")]) == 2
    assert "not a face model" in _one_line_error(capsys, "decode") and not (tmp_path / "d.mp4").exists()
