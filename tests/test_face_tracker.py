"""Video alignment: tracking between detections, jitter with and without smoothing, faceless frames."""

from __future__ import annotations

import numpy as np
import pytest

from face_data import STEADY_CLIP, clip_frames, dlib_backend, two_person_scene
from sganc_stream.errors import InputError
from sganc_stream.face.tracker import REDETECT_EVERY, SEEK_MAIN_EVERY, FaceFlags, VideoAligner


def jitter(quads: list) -> float:
    """Mean over frame pairs of the largest corner move, in units of the crop side."""
    corners = np.array([q.corners() for q in quads])
    side = 2.0 * np.mean([q.half for q in quads])
    return float(np.abs(np.diff(corners, axis=0)).max(axis=(1, 2)).mean() / side)


def test_steady_clip_jitter_small_with_smoothing_and_clearly_larger_without() -> None:
    frames = clip_frames(STEADY_CLIP, 100)
    aligner = VideoAligner(256, dlib_backend())
    smoothed = [aligner.align(f).quad for f in frames]
    raw_aligner = VideoAligner(256, dlib_backend(), smoothing=False)
    raw = [raw_aligner.align(f).quad for f in frames]
    assert jitter(smoothed) < 0.004  # under 1 px per frame at 256 px
    assert jitter(raw) > 2.0 * jitter(smoothed)


def test_detects_once_then_tracks_and_redetects_on_schedule() -> None:
    frames = clip_frames(STEADY_CLIP, 2 * REDETECT_EVERY + 1)
    aligner = VideoAligner(128, dlib_backend())
    flags = [aligner.align(f).flags for f in frames]
    detected = [i for i, f in enumerate(flags) if f == FaceFlags.DETECTED]
    assert detected == [0, REDETECT_EVERY, 2 * REDETECT_EVERY]
    assert all(f == FaceFlags.TRACKED for i, f in enumerate(flags) if i not in detected)


def test_no_face_before_during_and_after_a_face() -> None:
    frame = clip_frames(STEADY_CLIP, 1)[0]
    blank = np.full_like(frame, 90)
    aligner = VideoAligner(64, dlib_backend())
    first = aligner.align(blank)
    assert first.flags == FaceFlags.NO_FACE | FaceFlags.DEFAULT_QUAD and first.landmarks is None
    assert first.crop.shape == (64, 64, 3)
    assert (first.quad.cx, first.quad.cy, first.quad.half) == (127.5, 127.5, 128.0)
    found = aligner.align(frame)
    assert found.flags == FaceFlags.DETECTED
    lost = aligner.align(blank)
    assert lost.flags == FaceFlags.NO_FACE and lost.quad == found.quad  # the last quad is held
    assert aligner.align(frame).flags == FaceFlags.DETECTED  # and the face is found again


def test_a_face_that_jumps_is_redetected_not_tracked_into_the_background() -> None:
    frame = clip_frames(STEADY_CLIP, 1)[0]
    canvas = np.full((600, 600, 3), 90, np.uint8)
    here, there = canvas.copy(), canvas.copy()
    here[:256, :256] = frame
    there[344:, 344:] = frame
    aligner = VideoAligner(64, dlib_backend())
    for _ in range(3):
        before = aligner.align(here)
    after = aligner.align(there)
    assert after.flags == FaceFlags.DETECTED
    assert after.quad.cx - before.quad.cx == pytest.approx(344, abs=3)  # no smoothing slide after a jump
    assert after.quad.cy - before.quad.cy == pytest.approx(344, abs=3)


def test_rejects_non_rgb_frames() -> None:
    with pytest.raises(InputError, match="uint8 RGB"):
        VideoAligner(64, dlib_backend()).align(np.zeros((10, 10), np.uint8))


def test_main_face_is_followed_back_after_a_bystander_and_each_change_is_flagged() -> None:
    """The case of speaker_leaves_bystander_stays.mp4: the speaker (the larger face) leaves, a bystander stays."""
    main = [True] * 4 + [False] * 8 + [True] * (SEEK_MAIN_EVERY + 4)
    frames = two_person_scene(main, [True] * len(main))
    aligner = VideoAligner(64, dlib_backend())
    faces = [aligner.align(f) for f in frames]
    changes = [i for i, f in enumerate(faces) if f.flags & FaceFlags.NEW_IDENTITY]
    assert len(changes) == 2 and changes[0] == 4 and 12 <= changes[1] <= 12 + SEEK_MAIN_EVERY
    side = ["main" if f.quad.cx < 256 else "bystander" for f in faces]
    assert side[:4] == ["main"] * 4  # the larger of two faces at the start is the main one
    assert side[4:changes[1]] == ["bystander"] * (changes[1] - 4)  # while the speaker is away: the face in view
    assert side[changes[1]:] == ["main"] * (len(main) - changes[1])  # and back to the speaker, to the end
    assert not any(f.flags & FaceFlags.NO_FACE for f in faces)


def test_a_face_that_leaves_and_returns_is_the_same_person() -> None:
    present = [True] * 4 + [False] * 4 + [True] * 4
    frames = two_person_scene(present, [False] * len(present))
    aligner = VideoAligner(64, dlib_backend())
    flags = [aligner.align(f).flags for f in frames]
    assert [bool(f & FaceFlags.NO_FACE) for f in flags] == [not p for p in present]
    assert not any(f & FaceFlags.NEW_IDENTITY for f in flags)
