"""Landmark backends: dlib offline on real frames; FAN fails offline with one line naming the default."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from face_data import FULL_HD_CLIP, STEADY_CLIP, clip_frames, dlib_backend
from sganc_stream.errors import InputError
from sganc_stream.face.landmarks import make_landmarks


@pytest.mark.parametrize("clip", [STEADY_CLIP, FULL_HD_CLIP])
def test_dlib_finds_one_face_and_68_points_inside_it(clip: str) -> None:
    frame = clip_frames(clip, 1)[0]
    backend = dlib_backend()
    boxes = backend.detect(frame)
    assert len(boxes) == 1
    left, top, right, bottom = boxes[0]
    assert right - left > 0.2 * min(frame.shape[:2])  # a full-size box, mapped back from the downscaled search
    points = backend.landmarks(frame, boxes[0])
    assert points.shape == (68, 2) and points.dtype == np.float32
    inside = ((points[:, 0] > left - 0.2 * (right - left)) & (points[:, 0] < right + 0.2 * (right - left))
              & (points[:, 1] > top - 0.2 * (bottom - top)) & (points[:, 1] < bottom + 0.2 * (bottom - top)))
    assert inside.all()
    assert points[36:42, 0].mean() < points[42:48, 0].mean()  # iBUG order: image-left eye first
    assert points[36:48, 1].mean() < points[48:60, 1].mean()  # eyes above mouth


def test_no_face_in_a_blank_frame() -> None:
    assert dlib_backend().detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_fan_without_weights_fails_in_one_line_naming_dlib(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("face_alignment")
    import face_alignment.api

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(face_alignment.api, "load_file_from_url", offline)
    with pytest.raises(InputError) as caught:
        make_landmarks("fan")
    message = str(caught.value)
    assert "\n" not in message and "--landmarks dlib" in message and "offline" in message


def test_unknown_backend_is_an_input_error() -> None:
    with pytest.raises(InputError, match="dlib, fan"):
        make_landmarks("mediapipe")


def test_small_face_in_a_full_hd_frame_is_found_by_the_larger_search() -> None:
    face = clip_frames(STEADY_CLIP, 1)[0]  # face box about 150 px: too small for the 480 px search of 1920 px
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[100:356, 300:556] = face
    boxes = dlib_backend().detect(frame)
    assert len(boxes) == 1
    left, top, right, bottom = boxes[0]
    assert 300 < left < right < 556 and 100 < top < bottom < 356


def test_fan_without_its_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # what Python does for a module that is not installed
    with pytest.raises(InputError) as caught:
        make_landmarks("fan")
    assert str(caught.value) == ("--landmarks fan needs face_alignment, which is not installed: "
                                 "pip install 'sganc-stream[align-fan]' (in a checkout: "
                                 "pip install -c requirements.lock -e '.[align-fan]')")
