"""Who a face is: dlib's 128-D face descriptor from a face's 68 landmarks.

The descriptor is dlib's ``dlib_face_recognition_resnet_model_v1`` (a ResNet on a 150 px face chip, dlib's
``get_face_chip`` with padding 0.25, as in dlib's examples/dnn_face_recognition_ex.cpp). dlib calls two photos the
same person below 0.6 Euclidean distance (99.38 % on LFW); inside one video the tracker uses a tighter threshold
(``face.tracker.SAME_TRACKED_PERSON``, measured by benchmarks/tracking_identity.py).

Cutting the chip costs well under a millisecond; the network about 0.1-0.2 s per face on one busy CPU core, so
the tracker keeps chips and computes descriptors only when it must tell faces apart.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from sganc_stream.face.dlib_models import FACE_DESCRIPTOR, model_path

if TYPE_CHECKING:  # dlib is imported where a face is looked at, so decode-only processes never load it
    import dlib

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # the chip the network was trained on


@cache
def descriptor_network() -> dlib.face_recognition_model_v1:
    """The descriptor ResNet, loaded once per process (InputError if the model file is missing)."""
    import dlib

    return dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))


def face_chip(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The (150, 150, 3) uint8 chip the descriptor reads, cut from an RGB frame at 68 landmarks (frame pixels)."""
    import dlib

    points = [dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in landmarks]
    left, top = np.floor(landmarks.min(axis=0)).astype(int)
    right, bottom = np.ceil(landmarks.max(axis=0)).astype(int)
    shape = dlib.full_object_detection(dlib.rectangle(int(left), int(top), int(right), int(bottom)), points)
    return dlib.get_face_chip(np.ascontiguousarray(frame), shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def chip_descriptor(chip: np.ndarray) -> np.ndarray:
    """(128,) float64 descriptor of a chip from :func:`face_chip`."""
    return np.asarray(descriptor_network().compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float64)
