"""Locate dlib's model files shipped by the ``face-recognition-models`` package.

That package's own ``__init__`` imports ``pkg_resources``, which current setuptools no longer has,
so we find its ``models/`` folder through importlib without executing it.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from sganc_stream.errors import InputError

SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"


@cache
def model_path(filename: str) -> Path:
    """Path of one of face-recognition-models' data files, or a one-line InputError."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("dlib model files not found: pip install face-recognition-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise InputError(f"dlib model file {filename} missing from face-recognition-models ({path.parent})")
    return path
