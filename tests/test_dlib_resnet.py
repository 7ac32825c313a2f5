"""The PyTorch port of dlib's face-recognition ResNet reproduces dlib's own descriptors on real faces."""

from __future__ import annotations

from functools import cache

import cv2
import dlib
import numpy as np
import pytest
import torch

from face_data import FACES, shared_path
from sganc_stream.errors import InputError
from sganc_stream.face.dlib_models import FACE_DESCRIPTOR, SHAPE_PREDICTOR_68, model_path
from sganc_stream.face.dlib_resnet import CHIP_SIZE, DatFormatError, DlibFaceResNet, load_dat, parse_dat

BOUND = 1e-4  # issue 12: the port must match dlib's descriptors within 1e-4
# Real faces of different people, sources and sizes: 1024 px photos and 200 px UTKFace chips.
PHOTOS = ["mixed_real/000009.jpg", "mixed_real/000014.jpg", "mixed_real/000016.jpg", "mixed_real/000025.jpg",
          "mixed_real/000030.jpg", "mixed_real/000044.jpg", "utkface/100_1_0_20170110183726390.jpg.chip.jpg",
          "utkface/10_0_0_20170103200329407.jpg.chip.jpg"]


@cache
def dlib_models() -> tuple[object, object, object]:
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path(SHAPE_PREDICTOR_68))),
            dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR))))


def face_chip(name: str) -> np.ndarray:
    """dlib's 150 px chip (get_face_chip, padding 0.25) of the largest face, landmarks from the 68-point model."""
    detector, predictor, _ = dlib_models()
    image = cv2.cvtColor(cv2.imread(str(shared_path(FACES, name))), cv2.COLOR_BGR2RGB)
    scale = 256 / max(image.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces = detector(image, 1)
    assert len(faces), f"no face found in {name}"
    shape = predictor(image, max(faces, key=lambda f: f.area()))
    return dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    return np.stack([face_chip(name) for name in PHOTOS])


@pytest.fixture(scope="module")
def net() -> DlibFaceResNet:
    return DlibFaceResNet()


def test_port_matches_dlib_descriptors(chips: np.ndarray, net: DlibFaceResNet) -> None:
    *_, encoder = dlib_models()
    reference = np.array([encoder.compute_face_descriptor(chip) for chip in chips])
    with torch.no_grad():
        ours = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).double().numpy()
    assert ours.shape == (len(PHOTOS), 128)
    assert np.abs(ours - reference).max() <= BOUND
    # and the descriptors are informative: different people are apart by dlib's own rule
    distances = np.linalg.norm(reference[:, None] - reference[None], axis=-1)[np.triu_indices(len(PHOTOS), 1)]
    assert distances.min() > 0.3


def test_network_is_frozen(net: DlibFaceResNet) -> None:
    net.train()
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert net.dist_thresh == pytest.approx(0.6)


def test_gradients_reach_the_input(chips: np.ndarray, net: DlibFaceResNet) -> None:
    x = torch.from_numpy(chips[:2]).permute(0, 3, 1, 2).float().requires_grad_(True)
    net(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_input_shape_is_an_input_error(net: DlibFaceResNet) -> None:
    with pytest.raises(InputError, match="expects"):
        net(torch.zeros(1, 1, CHIP_SIZE, CHIP_SIZE))


def test_damaged_model_files_are_rejected() -> None:
    data = model_path(FACE_DESCRIPTOR).read_bytes()
    with pytest.raises(DatFormatError, match="ends early"):
        parse_dat(data[: len(data) // 2])
    at = data.index(b"max_pool_2")
    with pytest.raises(DatFormatError, match="not part of the face ResNet"):
        parse_dat(data[:at] + b"min" + data[at + 3:])
    with pytest.raises(DatFormatError, match="unread bytes"):
        parse_dat(data + b"\x00")
    assert len(load_dat().layers) == 108
