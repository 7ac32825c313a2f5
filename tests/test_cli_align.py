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
from sganc_stream.video import VideoReader


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
