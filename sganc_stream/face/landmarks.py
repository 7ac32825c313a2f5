"""Face detection and 68-point (iBUG) landmarks, in frame pixel coordinates.

Default backend: dlib's HOG detector and 68-point shape predictor, the tools FFHQ itself was aligned with, from PyPI
and fully offline. Optional backend: face-alignment's FAN, which downloads its weights on first use; it reuses the
dlib detector so only the landmark network is needed.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Protocol

import cv2
import numpy as np

from sganc_stream.errors import InputError, import_extra
from sganc_stream.face.dlib_models import SHAPE_PREDICTOR_68, model_path

Box = tuple[float, float, float, float]  # left, top, right, bottom in frame pixels

BACKENDS = ("dlib", "fan")
DETECT_SIDE = 480  # detect on a frame downscaled to this long side: HOG cost grows with area, faces stay > 80 px
SMALL_FRAME = 400  # frames up to this long side are also searched upsampled 2x (faces filling the frame)


class LandmarkBackend(Protocol):
    """What the aligner needs: find faces, and fit 68 landmarks inside a box."""

    name: str

    def detect(self, frame: np.ndarray) -> list[Box]: ...

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray: ...


class DlibDetector:
    """dlib's HOG frontal-face detector, run on a downscaled grey copy for speed; boxes in frame pixels.

    HOG finds faces of about 80 px and up: at the default 480 px search that is a sixth of the frame's long side, and
    a second search at 960 px halves it; a face that fills a small frame is searched for upsampled.
    """

    def __init__(self, detect_side: int = DETECT_SIDE) -> None:
        import dlib  # here, not at module level: decoding never needs it

        self._detector = dlib.get_frontal_face_detector()
        self.detect_side = detect_side

    def __call__(self, frame: np.ndarray) -> list[Box]:
        height, width = frame.shape[:2]
        long_side = max(height, width)
        scale = min(1.0, self.detect_side / long_side)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = self._detector(small, 0)
        if not len(boxes) and scale < 1.0:  # smaller faces vanish when downscaled: look again at twice the size
            scale = min(1.0, 2.0 * scale)
            larger = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            boxes = self._detector(larger, 0)
        if not len(boxes) and long_side <= SMALL_FRAME:
            scale, boxes = 1.0, self._detector(grey, 1)  # a face filling a small frame needs upsampling
        return [(r.left() / scale, r.top() / scale, (r.right() + 1) / scale - 1, (r.bottom() + 1) / scale - 1)
                for r in boxes]


class DlibLandmarks:
    """dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``); about 1 ms per face."""

    name = "dlib"

    def __init__(self, detect_side: int = DETECT_SIDE) -> None:
        import dlib

        self.detect = DlibDetector(detect_side)
        self._predictor = dlib.shape_predictor(str(model_path(SHAPE_PREDICTOR_68)))
        self._rectangle = dlib.rectangle
        self._points = np.empty((68, 2), dtype=np.float32)

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray:
        rect = self._rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(frame, rect)
        for i, part in enumerate(shape.parts()):
            self._points[i] = part.x, part.y
        return self._points.copy()


class FanLandmarks:
    """face-alignment's 2D FAN landmarks in dlib-detected boxes; needs its weights (downloaded on first use)."""

    name = "fan"

    def __init__(self, device: str = "cpu", detect_side: int = DETECT_SIDE) -> None:
        self.detect = DlibDetector(detect_side)
        face_alignment = import_extra("align-fan", "--landmarks fan", "face_alignment")
        try:
            # quiet: its dlib detector warns it is deprecated (we only use its landmarks), and torch.hub announces the
            # download on stderr, which would make an offline failure two lines
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                self._fan = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                         face_detector="dlib", compile=False)
        except Exception as error:  # noqa: BLE001 - any failure to fetch or load the weights means the same thing
            reason = " ".join(str(error).split())[:160] or type(error).__name__
            raise InputError(f"FAN landmarks unavailable (its weights download on first use and failed: {reason}); "
                             "use --landmarks dlib, the offline default") from error

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray:
        found = self._fan.get_landmarks_from_image(frame, detected_faces=[list(box)])
        if not found:
            raise InputError("FAN returned no landmarks for a detected face")
        return np.asarray(found[0][:, :2], dtype=np.float32)


def make_landmarks(name: str = "dlib") -> LandmarkBackend:
    """A landmark backend by name ('dlib' or 'fan')."""
    if name == "dlib":
        return DlibLandmarks()
    if name == "fan":
        return FanLandmarks()
    raise InputError(f"unknown landmark backend {name!r}: choose one of {', '.join(BACKENDS)}")
