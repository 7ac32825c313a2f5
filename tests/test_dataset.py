"""Clip-tree walks (MEAD, FILMPAC, folder) and resumable dataset runs with the tiny random model."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from face_data import CLIPS, STEADY_CLIP, shared_path
from pipeline_data import tiny_bundle
from sganc_stream.dataset import find_clips, scan_clips, transcode_dataset
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import FaceModel, TranscodeOptions, load_face_model
from sganc_stream.video import read_frames, write_frames


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(tiny_bundle())


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_mead_layout(tmp_path: Path) -> None:
    _touch(tmp_path, "M030/video/front/happy/level_3/001.mp4", "M030/video/left_30/sad/level_1/012.mp4",
           "M030/audio/happy/level_3/001.m4a", "M030/video/front/happy/notes.mp4")
    clips = find_clips(tmp_path, "mead")
    assert [c.rel for c in clips] == ["M030/video/front/happy/level_3/001", "M030/video/left_30/sad/level_1/012"]
    assert clips[1].fields == {"actor": "M030", "view": "left_30", "emotion": "sad", "level": "1", "take": "012"}


def test_filmpac_and_folder_layouts(tmp_path: Path) -> None:
    _touch(tmp_path, "a/FP006734MD02.mp4", "FP000001AB01.mov", "other.mp4", "FP12.mp4", "x.txt")
    assert [c.rel for c in find_clips(tmp_path, "filmpac")] == ["FP000001AB01", "a/FP006734MD02"]
    assert find_clips(tmp_path, "filmpac")[1].fields == {"clip": "FP006734MD02", "number": "006734", "variant": "MD02"}
    assert len(find_clips(tmp_path, "folder")) == 4
    with pytest.raises(InputError, match="no MEAD clips"):
        find_clips(tmp_path, "mead")
    with pytest.raises(InputError, match="no such folder"):
        find_clips(tmp_path / "absent", "folder")


def test_mead_run_resumes_and_retries_failures(model: FaceModel, tmp_path: Path) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    root, out = tmp_path / "mead", tmp_path / "out"
    for name in ("M030/video/front/happy/level_3/001.mp4", "M030/video/front/sad/level_1/002.mp4"):
        (root / name).parent.mkdir(parents=True)
        (root / name).symlink_to(clip)
    (root / "M030/video/front/angry/level_2").mkdir(parents=True)
    (root / "M030/video/front/angry/level_2/003.mp4").write_text("not a video")
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), max_frames=2, quality=True, identity_every=2,
                               progress=False)
    seen: list[str] = []
    summary = transcode_dataset(model, root, out, "mead", options, on_clip=lambda c, s: seen.append(s))
    assert [s.split(":")[0] for s in seen] == ["failed", "done", "done"]
    assert summary["done"] == 2 and summary["failed"] == 1 and summary["frames"] == 4
    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "done", "done"]
    assert rows[0]["error"].startswith("cannot read video") and rows[1]["emotion"] == "happy"
    report = json.loads((out / "M030/video/front/happy/level_3/001.report.json").read_text())
    assert int(rows[1]["bytes"]) == report["bytes"] == (out / "M030/video/front/happy/level_3/001.sgnc").stat().st_size
    assert float(rows[1]["psnr_vs_aligned"]) == pytest.approx(report["quality"]["vs_aligned"]["psnr"])
    assert json.loads((out / "summary.json").read_text())["done"] == 2

    seen.clear()  # resume: finished clips are skipped (told first), the failed one is tried again
    transcode_dataset(model, root, out, "mead", options, on_clip=lambda c, s: seen.append(s))
    assert [s.split(":")[0] for s in seen] == ["skipped", "skipped", "failed"]


def test_folder_run_redoes_clips_made_with_other_settings(model: FaceModel, tmp_path: Path) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "talk.mp4").symlink_to(clip)
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), max_frames=2, progress=False)
    seen: list[str] = []
    for opts in (options, options, replace(options, max_frames=3)):
        summary = transcode_dataset(model, tmp_path / "in", tmp_path / "out", "folder", opts,
                                    on_clip=lambda c, s: seen.append(s))
    assert seen == ["done", "skipped", "done"]
    assert summary["frames"] == 3 and summary["kbps"] > 0 and summary["psnr_vs_aligned"] is None


def test_mead_flat_names_and_unmatched_files(tmp_path: Path) -> None:
    _touch(tmp_path, "M030/video/front/happy/level_3/001.mp4", "dreamtalk/M030_front_angry_level3_001.mp4",
           "eamm/M030_sad_3_001.mp4", "W009_left_30_fear_level_2_004.mov", "eamm/contempt.mp4", "M030_front_angry.mp4")
    clips, unmatched = scan_clips(tmp_path, "mead")
    assert [c.rel for c in clips] == ["M030/video/front/happy/level_3/001", "W009_left_30_fear_level_2_004",
                                      "dreamtalk/M030_front_angry_level3_001", "eamm/M030_sad_3_001"]
    assert clips[2].fields == {"actor": "M030", "view": "front", "emotion": "angry", "level": "3", "take": "001"}
    assert clips[1].fields["view"] == "left_30" and clips[3].fields["view"] == ""
    assert unmatched == ["M030_front_angry.mp4", "eamm/contempt.mp4"]
    assert [c.rel for c in find_clips(tmp_path, "mead")] == [c.rel for c in clips]
    assert scan_clips(tmp_path, "folder")[1] == []
    only_other = tmp_path / "other"
    _touch(only_other, "a.mp4")
    with pytest.raises(InputError, match=r"no MEAD clips .*; 1 other video file\(s\), e.g. a.mp4"):
        scan_clips(only_other, "mead")


def test_dataset_command_checks_the_tree_before_loading_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from sganc_stream.cli import main
    from sganc_stream.cli import transcode as cli_transcode

    monkeypatch.setattr(cli_transcode, "load_model", lambda *args: pytest.fail("model loaded before the tree check"))
    _touch(tmp_path / "in", "notes.mp4")
    for root, needle in ((tmp_path / "absent", "no such folder"), (tmp_path / "in", "no MEAD clips")):
        assert main(["transcode-dataset", "--layout", "mead", str(root), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]


def test_clips_with_the_same_stem_keep_distinct_outputs(model: FaceModel, tmp_path: Path) -> None:
    """interview.mp4 and interview.mkv in one folder: two streams, two reports, none overwritten."""
    clip = shared_path(CLIPS, STEADY_CLIP)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "interview.mp4").symlink_to(clip)
    write_frames(tmp_path / "in" / "interview.mkv", read_frames(clip, 1), 25.0, lossless=True)  # one frame only
    (tmp_path / "in" / "other.mp4").symlink_to(clip)
    assert [c.rel for c in find_clips(tmp_path / "in", "folder")] == ["interview.mkv", "interview.mp4", "other"]
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), max_frames=2, progress=False)
    summary = transcode_dataset(model, tmp_path / "in", tmp_path / "out", "folder", options)
    assert summary["done"] == 3
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".sgnc") == [
        "interview.mkv.sgnc", "interview.mp4.sgnc", "other.sgnc"]
    reports = [json.loads((out / f"interview.{s}.report.json").read_text()) for s in ("mkv", "mp4")]
    assert [r["input"] for r in reports] == [str(tmp_path / "in" / "interview.mkv"), str(tmp_path / "in" / "interview.mp4")]
    assert [r["frames"] for r in reports] == [1, 2]  # each stream is its own clip's
