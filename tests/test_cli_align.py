"""`sganc-stream align` on a video and on image folders, with --json, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from face_data import CLIPS, FACES, STEADY_CLIP, shared_path
from sganc_stream import cli
from sganc_stream.video import VideoReader, read_frames
from video_data import display_matrix, stored_for_display, write_stored


@pytest.fixture(autouse=True)
def only_align(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the real CLI entry point with just this sub-command (the others are not this test's concern)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["align"])


def test_video_to_video_with_json(tmp_path: Path) -> None:
    clip = shared_path(CLIPS, STEADY_CLIP)
    out, quads = tmp_path / "aligned.mp4", tmp_path / "quads.json"
    assert cli.main(["align", str(clip), str(out), "--size", "128", "--json", str(quads)]) == 0
    with VideoReader(clip) as source, VideoReader(out) as aligned:
        assert aligned.size == (128, 128)
        assert sum(1 for _ in aligned) == sum(1 for _ in source)
        assert aligned.fps == pytest.approx(source.fps)
    record = json.loads(quads.read_text())
    assert record["size"] == 128 and record["smoothing"] is True
    frames = record["frames"]
    assert frames[0]["flags"] == ["DETECTED"] and {"TRACKED"} <= {f for r in frames for f in r["flags"]}
    assert np.array(frames[10]["quad"]).shape == (4, 2)


def test_video_to_folder_writes_one_png_per_frame(tmp_path: Path) -> None:
    """Found by a new user: a video into a folder crashed (KeyError) on its first crop."""
    clip = shared_path(CLIPS, STEADY_CLIP)
    out = tmp_path / "crops"
    assert cli.main(["align", str(clip), str(out), "--size", "64"]) == 0
    with VideoReader(clip) as source:
        count = sum(1 for _ in source)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(count)]
    assert cv2.imread(str(out / names[-1])).shape == (64, 64, 3)


def test_image_folder_to_folder_skips_faceless_images(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["000009.jpg", "000014.jpg"]:
        shutil.copy(shared_path(FACES, f"mixed_real/{name}"), photos / name)
    cv2.imwrite(str(photos / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    out, quads = tmp_path / "crops", tmp_path / "quads.json"
    assert cli.main(["align", str(photos), str(out), "--size", "64", "--json", str(quads)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000009.png", "000014.png"]
    assert cv2.imread(str(out / "000009.png")).shape == (64, 64, 3)
    flags = {r["name"]: r["flags"] for r in json.loads(quads.read_text())["frames"]}
    assert flags == {"000009.jpg": ["DETECTED"], "000014.jpg": ["DETECTED"],
                     "blank.png": ["NO_FACE", "DEFAULT_QUAD"]}


def test_image_folder_as_a_sequence_writes_every_frame(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    with VideoReader(shared_path(CLIPS, STEADY_CLIP)) as reader:
        for index, frame in zip(range(5), reader):
            cv2.imwrite(str(frames / f"{index:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(frames / "0005.png"), np.full((256, 256, 3), 90, np.uint8))
    out = tmp_path / "aligned.mp4"
    quads = tmp_path / "quads.json"
    assert cli.main(["align", str(frames), str(out), "--sequence", "--size", "64", "--json", str(quads)]) == 0
    with VideoReader(out) as aligned:
        assert sum(1 for _ in aligned) == 6
    last = json.loads(quads.read_text())["frames"][-1]
    assert last["flags"] == ["NO_FACE"]  # the faceless frame keeps the last quad


def test_missing_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["align", str(tmp_path / "nope.mp4"), str(tmp_path / "out.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sganc-stream align: error:") and "\n" not in err


def test_photos_with_the_same_stem_get_distinct_crops(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    face = cv2.imread(str(shared_path(FACES, "mixed_real/000009.jpg")))
    cv2.imwrite(str(photos / "me.jpg"), face)
    cv2.imwrite(str(photos / "me.png"), face[:, ::-1])  # another photo, same stem
    cv2.imwrite(str(photos / "you.png"), face)
    assert cli.main(["align", str(photos), str(tmp_path / "crops"), "--size", "64"]) == 0
    crops = tmp_path / "crops"
    assert sorted(p.name for p in crops.iterdir()) == ["me.jpg.png", "me.png.png", "you.png"]
    assert not np.array_equal(cv2.imread(str(crops / "me.jpg.png")), cv2.imread(str(crops / "me.png.png")))


@pytest.mark.parametrize("name", ["aligned.avi", "aligned.flv", "aligned.txt"])
def test_unknown_output_suffix_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          name: str) -> None:
    assert cli.main(["align", str(tmp_path / "not-read-yet.mp4"), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    why = "AVI cannot hold presentation times" if name.endswith(".avi") else "unknown suffix"
    assert err.startswith("sganc-stream align: error: cannot write video") and why in err
    assert "\n" not in err and list(tmp_path.iterdir()) == []


def test_rotated_phone_clip_is_aligned_upright(tmp_path: Path) -> None:
    """Stored sideways with a display matrix: crops equal those of the upright clip, and a face is found."""
    with VideoReader(shared_path(CLIPS, STEADY_CLIP)) as reader:
        frames = [f for _, f in zip(range(3), reader)]
    write_stored(tmp_path / "upright.mp4", frames)
    write_stored(tmp_path / "phone.mp4", [stored_for_display(f, "turn_cw") for f in frames], display_matrix("turn_cw"))
    for name in ("upright", "phone"):
        assert cli.main(["align", str(tmp_path / f"{name}.mp4"), str(tmp_path / f"{name}.png"), "--size", "64",
                         "--json", str(tmp_path / f"{name}.json")]) == 0
    assert [np.array_equal(a, b) for a, b in zip(read_frames(tmp_path / "upright.png"),
                                                 read_frames(tmp_path / "phone.png"), strict=True)] == [True] * 3
    flags = [r["flags"] for r in json.loads((tmp_path / "phone.json").read_text())["frames"]]
    assert all("NO_FACE" not in f for f in flags)
