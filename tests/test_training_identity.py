"""IdentityLoss: the fixed chip warp re-measured on real faces, distances that make sense, gradients to the input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from face_data import FACES, shared_path
from sganc_stream.errors import InputError
from sganc_stream.face.tracker import FaceFlags, VideoAligner
from sganc_stream.metrics import FaceDescriptor
from sganc_stream.training.identity import CHIP_WARP, IdentityLoss, chip_warp_of, measure_chip_warp

SIZE = 128  # the training crops' resolution
PHOTOS = [f"mixed_real/{n}" for n in ("000009.jpg", "000014.jpg", "000016.jpg", "000025.jpg", "000030.jpg",
                                      "000044.jpg", "000051.jpg", "000052.jpg", "000074.jpg")]
MORE = 16  # further photos (first of mixed_real after PHOTOS) for re-measuring the warp


def align(names: list[str], size: int = SIZE) -> np.ndarray:
    """FFHQ-recipe crops of shared photos, aligned as prepare-faces aligns photos (faces not found are skipped)."""
    aligner = VideoAligner(size, "dlib", smoothing=False, redetect_every=1)
    crops = []
    for name in names:
        aligner.reset()
        face = aligner.align(cv2.cvtColor(cv2.imread(str(shared_path(FACES, name))), cv2.COLOR_BGR2RGB))
        if face.flags & FaceFlags.DETECTED:
            crops.append(face.crop)
    return np.stack(crops)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return align(PHOTOS)


@pytest.fixture(scope="module")
def loss() -> IdentityLoss:
    return IdentityLoss()


@pytest.fixture(scope="module")
def describe() -> FaceDescriptor:
    return FaceDescriptor(fallback=False)


def test_chip_warp_constant_remeasures(crops: np.ndarray, describe: FaceDescriptor) -> None:
    """The constant is the mean per-crop warp: a fresh sample's mean lies within its sampling error of it."""
    names = sorted(p.relative_to(FACES).as_posix() for p in (FACES / "mixed_real").glob("*.jpg"))
    extra = [n for n in names if n not in PHOTOS][:MORE]
    thetas = measure_chip_warp(np.concatenate([crops, align(extra)]), describe)
    assert len(thetas) >= 20
    standard_error = thetas.std(axis=0) / np.sqrt(len(thetas))
    assert np.all(np.abs(thetas.mean(axis=0) - np.array(CHIP_WARP)) <= 3 * standard_error + 0.005)
    # each warp is a similarity (dlib rotates and scales the chip, no shear)
    assert np.allclose(thetas[:, 0, 0], thetas[:, 1, 1]) and np.allclose(thetas[:, 0, 1], -thetas[:, 1, 0])


def test_exact_warp_reproduces_dlib(crops: np.ndarray, loss: IdentityLoss, describe: FaceDescriptor) -> None:
    """Through a crop's own measured warp, the port on our float chip gives dlib's descriptor of that crop."""
    distances = []
    for crop in crops[:4]:
        box, _ = describe.face_box(crop)
        shape = describe.predictor(crop, box)
        theta = torch.from_numpy(chip_warp_of(crop, shape)).float()[None]
        with torch.no_grad():
            ours = loss.descriptors(to_tensor(crop[None]), theta)[0].double().numpy()
        distances.append(np.linalg.norm(ours - np.asarray(describe.encoder.compute_face_descriptor(crop, shape))))
    assert max(distances) < 0.03  # resampling only: our float bilinear chip vs dlib's uint8 one


def test_distances_through_the_fixed_warp(crops: np.ndarray, loss: IdentityLoss) -> None:
    x = to_tensor(crops)
    with torch.no_grad():
        d = loss.descriptors(x)
        assert loss(x, x) < 1e-4
    between = torch.cdist(d.double(), d.double())[np.triu_indices(len(d), 1)]
    assert torch.median(between) > 0.6  # different people, by dlib's rule


def test_realigned_crop_keeps_identity(crops: np.ndarray, loss: IdentityLoss) -> None:
    """A crop aligned again from itself (landmarks found anew: a small shift/scale) stays the same person."""
    aligner = VideoAligner(SIZE, "dlib", smoothing=False, redetect_every=1)
    pairs = []
    for crop in crops[:5]:
        aligner.reset()
        face = aligner.align(crop)
        assert face.flags & FaceFlags.DETECTED
        pairs.append(face.crop)
    with torch.no_grad():
        distance = loss.compare(to_tensor(crops[:5]), to_tensor(np.stack(pairs))).distance
    assert distance.max() < 0.3


def test_resolutions_agree(crops: np.ndarray, loss: IdentityLoss) -> None:
    """A 128 px crop upsampled to 256..1024 px gives nearly its descriptor (measured 0.02-0.06: area-downsampled
    before the warp from 443 px up); at 64 px detail is lost (measured 0.2-0.27) but it stays the same person."""
    x = to_tensor(crops[:3])
    with torch.no_grad():
        ref = loss.descriptors(x)
        for size in (256, 443, 512, 1024):
            other = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            assert (loss.descriptors(other) - ref).norm(dim=1).max() < 0.1, size
        small = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        assert (loss.descriptors(small) - ref).norm(dim=1).max() < 0.4


def test_gradients_flow_to_the_input_only(crops: np.ndarray, loss: IdentityLoss) -> None:
    target = to_tensor(crops[:2])
    x = (target + 0.2 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
    terms = loss.compare(x, target)
    assert terms.distance.shape == terms.perceptual.shape == (2,)
    (terms.distance.mean() + terms.perceptual.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training and not loss.net.training


def test_a_descent_step_lowers_the_loss(crops: np.ndarray, loss: IdentityLoss) -> None:
    target = to_tensor(crops[1:2])
    x = to_tensor(crops[2:3]).requires_grad_(True)  # another person
    before = loss(x, target)
    before.backward()
    with torch.no_grad():
        after = loss(x - 2.0 * x.grad / x.grad.abs().max(), target)
    assert after < before


def test_bad_inputs_are_input_errors(loss: IdentityLoss, describe: FaceDescriptor) -> None:
    with pytest.raises(InputError, match="square"):
        loss.chips(torch.zeros(1, 3, 64, 80))
    with pytest.raises(InputError, match="differ in shape"):
        loss(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 128, 128))
    with pytest.raises(InputError, match="per-sample warps"):
        loss.chips(torch.zeros(2, 3, 64, 64), torch.zeros(1, 2, 3))
    with pytest.raises(InputError, match="found faces in 0 of 2"):
        measure_chip_warp(np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8), describe)
