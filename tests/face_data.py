"""Real clips from ../shared for the face tests (skipped with a reason where absent) and a shared dlib backend."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from sganc_stream.face.landmarks import DlibLandmarks
from sganc_stream.video import read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "data" / "clips"
FACES = SHARED / "data" / "faces"
STEADY_CLIP = "dreamtalk_mead/M030_front_neutral_level1_001.mp4"  # 256x256, frontal, head nearly still
FULL_HD_CLIP = "mead_eamm/M030_sad_3_001.mp4"  # 1920x1080: the face must be found
BYSTANDER_CLIP = "styletalk/source_video/andrew_clip_1.mp4"  # 256x256, another person than STEADY_CLIP's


def shared_path(root: Path, name: str) -> Path:
    path = root / name
    if not path.exists():
        pytest.skip(f"shared data {path} absent (tests read ../shared/data beside the checkout)")
    return path


@cache
def _frames(name: str, limit: int) -> tuple[np.ndarray, ...]:
    return tuple(read_frames(CLIPS / name, limit))


def clip_frames(name: str, limit: int) -> tuple[np.ndarray, ...]:
    """The first ``limit`` frames of a shared clip (cached across test modules)."""
    shared_path(CLIPS, name)
    return _frames(name, limit)


@cache
def dlib_backend() -> DlibLandmarks:
    """One loaded shape predictor for all tests (loading it takes about a second)."""
    return DlibLandmarks()


def two_person_scene(main: Sequence[bool], bystander: Sequence[bool]) -> list[np.ndarray]:
    """A 256x480 scene per frame: STEADY_CLIP's speaker (256 px, the larger face) on the left and BYSTANDER_CLIP's
    person (scaled to 200 px) on the right, each only where ``main[i]`` / ``bystander[i]``; grey wall elsewhere."""
    n = len(main)
    speaker, other = clip_frames(STEADY_CLIP, n), clip_frames(BYSTANDER_CLIP, n)
    frames = []
    for i in range(n):
        scene = np.full((256, 480, 3), 110, np.uint8)
        if main[i]:
            scene[:, :256] = speaker[i]
        if bystander[i]:
            scene[28:228, 270:470] = cv2.resize(other[i], (200, 200), interpolation=cv2.INTER_AREA)
        frames.append(scene)
    return frames
