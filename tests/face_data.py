"""Real clips from ../shared for the face tests (skipped with a reason where absent) and a shared dlib backend."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.face.landmarks import DlibLandmarks
from sganc_stream.video import read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "data" / "clips"
FACES = SHARED / "data" / "faces"
STEADY_CLIP = "dreamtalk_mead/M030_front_neutral_level1_001.mp4"  # 256x256, frontal, head nearly still
FULL_HD_CLIP = "mead_eamm/M030_sad_3_001.mp4"  # 1920x1080: the face must be found


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
