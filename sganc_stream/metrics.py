"""Every quality number the project reports, computed one way: PSNR, MS-SSIM, dlib identity distance, LPIPS,
detail ratio (Laplacian energy of the decoded frame over the reference's: over-smoothing).

Inputs are uint8 RGB images (H, W, 3) or batches (N, H, W, 3); a single image gives a float, a batch a float64
array with one value per frame.

MS-SSIM: pytorch_msssim on RGB in [0, 255] (data_range 255, per-channel then averaged), Gaussian window sigma 1.5,
the standard 5 scales and weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Its 4 downsamplings need
min(H, W) > (win_size - 1) * 16, so win_size is 11 (the standard) when min(H, W) > 160 and otherwise the largest odd
size that fits: 7 for 128 px crops, 3 for 64 px; ``ms_ssim_window`` gives it and reports record it.

Identity distance: Euclidean distance between dlib 128-D face descriptors (dlib_face_recognition_resnet_model_v1;
dlib's rule of thumb: < 0.6 means the same person). The face rectangle comes from dlib's HOG detector (largest face);
where it finds none — a blurred or damaged decoded frame, a small crop — the 68-point predictor is run on
``FFHQ_FACE_BOX`` instead, the box the detector returns on average for FFHQ-aligned crops. On those 33 crops that
box gave descriptors a median 0.025 (max 0.055) from the detector-box ones; a whole-image rectangle, far larger than
the face, misplaces the landmarks: median 0.19, max 0.74 — as far as another person. With ``fallback=False``
frames without a detected face give NaN instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from typing import TYPE_CHECKING

import cv2
import numpy as np

from sganc_stream.errors import InputError
from sganc_stream.face.dlib_models import SHAPE_PREDICTOR_68, model_path
from sganc_stream.face.identity import descriptor_network
from sganc_stream.threads import single_thread

if TYPE_CHECKING:  # imported where used: a process that only decodes never loads dlib (nor, for --help, torch)
    import dlib
    import torch

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Median HOG-detector box (left, top, right, bottom as fractions of the side) on 33 FFHQ-recipe 256 px crops
# (sganc_stream.face.ffhq_quad geometry) of the first frames of every other shared clip up to 512 px.
FFHQ_FACE_BOX = (0.18, 0.31, 0.76, 0.89)
DETECT_SIDE = 256  # detection runs on a copy at most this size: fast, and aligned faces are then ~150 px
LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet weights that lpips(net="alex") loads
_CHUNK = 16  # frames per MS-SSIM/LPIPS batch: bounded memory on long clips
# Identity distance costs about 0.1 s a frame pair on CPU, more than every other measure together: on every frame
# it turned an 8 s transcode with --report into 137 s. Reports measure it on every 10th frame unless told otherwise.
IDENTITY_EVERY = 10


def _checked(x: np.ndarray, ndims: tuple[int, ...] = (3, 4)) -> np.ndarray:
    """``x`` as an array if it is a uint8 RGB image (or batch); a one-line InputError otherwise."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in ndims or x.shape[-1] != 3:
        raise InputError(f"expected uint8 RGB images (H, W, 3) or (N, H, W, 3), got {x.dtype} {x.shape}")
    return x


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate two uint8 RGB images/batches of equal shape; returns them as batches and whether input was one."""
    a, b = _checked(a), _checked(b)
    if a.shape != b.shape:
        raise InputError(f"images to compare differ in shape: {a.shape} vs {b.shape}")
    single = a.ndim == 3
    return (a[None], b[None], True) if single else (a, b, False)


def _result(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def psnr(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """PSNR in dB per frame (peak 255, MSE over all pixels and channels); identical frames give inf."""
    a, b, single = _pair(a, b)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(255.0**2 / mse)
    return _result(values, single)


def detail_ratio(reference: np.ndarray, decoded: np.ndarray) -> float | np.ndarray:
    """How much fine detail a decoded frame keeps: variance of the Laplacian of its luma (the focus measure of
    Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield microscopy") over that of the reference frame.
    1 = as much high-frequency energy as the reference; below 1 = smoother (blurred skin, soft eyes); above 1 =
    more (noise, artefacts). Per frame, at the frames' own size; a flat reference gives inf or NaN."""
    a, b, single = _pair(reference, decoded)

    def energy(x: np.ndarray) -> np.ndarray:
        return np.array([cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for im in x])

    with np.errstate(divide="ignore", invalid="ignore"):
        return _result(energy(b) / energy(a), single)


# Luma weights Y' = 0.299 R' + 0.587 G' + 0.114 B' of ITU-R BT.601.
LUMA_601 = (0.299, 0.587, 0.114)

# Central box of an FFHQ-aligned crop that is skin (cheeks, nose, mouth) in nearly every face, as fractions of the side.
FACE_CENTRE_ROWS, FACE_CENTRE_COLS = (0.45, 0.75), (0.30, 0.70)


def _centre_box(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """The central skin box (FACE_CENTRE_ROWS, FACE_CENTRE_COLS) of uint8 RGB crops (h, w, 3) or (n, h, w, 3), as
    (n, bh, bw, 3) uint8, and whether a single image was given."""
    x = _checked(images)
    single = x.ndim == 3
    x = x[None] if single else x
    h, w = x.shape[1:3]
    return x[:, int(h * FACE_CENTRE_ROWS[0]):int(h * FACE_CENTRE_ROWS[1]),
             int(w * FACE_CENTRE_COLS[0]):int(w * FACE_CENTRE_COLS[1])], single


def _box_luma(images: np.ndarray) -> tuple[np.ndarray, bool]:
    box, single = _centre_box(images)
    return (box.astype(np.float64) @ np.array(LUMA_601)).reshape(len(box), -1), single


def face_luma(images: np.ndarray) -> float | np.ndarray:
    """Mean luma Y' (ITU-R BT.601 weights, 0–255) of the central skin box of FFHQ-aligned uint8 RGB face crops
    (h, w, 3) or (n, h, w, 3): a skin-tone measure. Comparing a decoded face's with its input's shows whether a
    model keeps skin tone (a model that regresses to its data's mean lightens dark skin and darkens light skin)."""
    luma, single = _box_luma(images)
    return _result(luma.mean(axis=1), single)


def face_contrast(images: np.ndarray) -> float | np.ndarray:
    """Standard deviation of luma Y' (BT.601, 0–255) over the central skin box of FFHQ-aligned uint8 RGB face crops
    (h, w, 3) or (n, h, w, 3): the shading that models a face (cheekbones, nose, mouth). A decoder that keeps the mean
    tone but flattens this renders a darker-skinned face as a lighter-skinned one to the eye."""
    luma, single = _box_luma(images)
    return _result(luma.std(axis=1), single)


def face_lab(images: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour (L* 0–100, a*, b*; D65, sRGB input, OpenCV's conversion) of the central skin box of
    FFHQ-aligned uint8 RGB face crops (h, w, 3) or (n, h, w, 3): shape (3,) or (n, 3), float64. The chroma
    C*ab = √(a*² + b*²) of it shows what luma cannot: a model that desaturates skin (brown skin rendered greyish
    or pink at the same lightness) lowers C*ab while Y' stays put."""
    box, single = _centre_box(images)
    lab = np.stack([cv2.cvtColor(b.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)
                    for b in box]).astype(np.float64)
    return lab[0] if single else lab


def ms_ssim_window(height: int, width: int) -> int:
    """Gaussian window size used for MS-SSIM at this frame size (see the module docstring)."""
    side = min(height, width)
    win = min(11, (side - 1) // 16 + 1)
    win -= 1 - win % 2
    if win < 3:
        raise InputError(f"frames of {width}x{height} are too small for 5-scale MS-SSIM (need a side over 32)")
    return win


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """MS-SSIM per frame, in [0, 1]; 1 for identical frames."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim  # here: decoding alone never measures quality

    a, b, single = _pair(a, b)
    win = ms_ssim_window(*a.shape[1:3])
    values = []
    with torch.no_grad(), single_thread():
        for start in range(0, len(a), _CHUNK):
            x, y = (torch.from_numpy(np.ascontiguousarray(t[start:start + _CHUNK])).permute(0, 3, 1, 2).float()
                    for t in (a, b))
            values.append(_ms_ssim(x, y, data_range=255, size_average=False, win_size=win,
                                   weights=list(MS_SSIM_WEIGHTS)).double().numpy())
    return _result(np.concatenate(values), single)


class FaceDescriptor:
    """dlib's 128-D face descriptor, with the detector, 68-point predictor and ResNet loaded once.

    Call it on a uint8 RGB image: returns the descriptor, or None when no face rectangle is available
    (only with ``fallback=False``). ``counts`` tallies how each rectangle was found: detector, fallback, missing.
    """

    def __init__(self, *, fallback: bool = True) -> None:
        self.fallback = fallback
        import dlib

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(SHAPE_PREDICTOR_68)))
        self.encoder = descriptor_network()
        self.counts = {"detector": 0, "fallback": 0, "missing": 0}

    def face_box(self, image: np.ndarray) -> tuple[dlib.rectangle | None, str]:
        """Largest detected face (image coordinates) and how it was found."""
        height, width = image.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(height, width))
        small = image if scale == 1.0 else cv2.resize(image, (round(width * scale), round(height * scale)),
                                                      interpolation=cv2.INTER_AREA)
        upsample = 1 if min(small.shape[:2]) < 200 else 0  # HOG finds faces from ~80 px: upsample small crops
        faces = self.detector(small, upsample)
        if len(faces):
            r = max(faces, key=lambda f: f.area())
            return self._dlib.rectangle(*(round(v / scale) for v in (r.left(), r.top(), r.right(), r.bottom()))), "detector"
        if not self.fallback:
            return None, "missing"
        left, top, right, bottom = FFHQ_FACE_BOX
        return self._dlib.rectangle(round(left * width), round(top * height), round(right * width),
                              round(bottom * height)), "fallback"

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        image = np.ascontiguousarray(_checked(image, (3,)))
        box, source = self.face_box(image)
        self.counts[source] += 1
        if box is None:
            return None
        shape = self.predictor(image, box)
        return np.asarray(self.encoder.compute_face_descriptor(image, shape), dtype=np.float64)


@cache
def default_face_descriptor() -> FaceDescriptor:
    """Process-wide FaceDescriptor, so callers that do not keep one still load the models only once."""
    return FaceDescriptor()


def identity_distance(a: np.ndarray, b: np.ndarray, *, descriptor: FaceDescriptor | None = None
                      ) -> float | np.ndarray:
    """Euclidean distance between the face descriptors of a and b per frame; NaN where either has none."""
    a, b, single = _pair(a, b)
    describe = descriptor or default_face_descriptor()
    values = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        dx, dy = describe(x), describe(y)
        if dx is not None and dy is not None:
            values[i] = np.linalg.norm(dx - dy)
    return _result(values, single)


@cache
def _lpips_model() -> torch.nn.Module | None:
    """LPIPS (AlexNet) if the lpips package and its backbone weights are already on this machine; never downloads."""
    import torch

    if importlib.util.find_spec("lpips") is None:
        return None
    if not (Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE).is_file():
        return None
    import lpips as lpips_package

    return lpips_package.LPIPS(net="alex", verbose=False).eval()


def lpips(a: np.ndarray, b: np.ndarray) -> float | np.ndarray | None:
    """LPIPS distance per frame (AlexNet), or None when unavailable here — reports show it as missing, not 0."""
    a, b, single = _pair(a, b)
    model = _lpips_model()
    if model is None:
        return None
    import torch

    values = []
    with torch.no_grad():
        for start in range(0, len(a), _CHUNK):
            x, y = (torch.from_numpy(np.ascontiguousarray(t[start:start + _CHUNK])).permute(0, 3, 1, 2).float()
                    / 127.5 - 1.0 for t in (a, b))
            values.append(model(x, y).flatten().double().numpy())
    return _result(np.concatenate(values), single)


def _summary(values: np.ndarray) -> dict[str, float | None]:
    """Mean and median of the finite-or-inf values (NaN = not computed, left out); None when there are none."""
    kept = values[~np.isnan(values)]
    if not len(kept):
        return {"mean": None, "median": None}
    return {"mean": float(np.mean(kept)), "median": float(np.median(kept))}


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    """A chunk of frames as one validated batch; frames of different sizes are an InputError, not a ValueError."""
    try:
        return _checked(np.stack(frames), (4,))
    except ValueError as error:
        shapes = ", ".join(sorted({str(np.shape(f)) for f in frames}))
        raise InputError(f"frames to compare differ in size: {shapes}") from error


def compare_frames(ref_frames: Iterable[np.ndarray], test_frames: Iterable[np.ndarray], *,
                   identity_every: int = IDENTITY_EVERY, descriptor: FaceDescriptor | None = None) -> dict:
    """Quality of ``test_frames`` against ``ref_frames`` (paired in order): what a report's ``quality`` holds.

    PSNR and MS-SSIM on every frame; identity distance on every ``identity_every``-th frame (it costs ~0.1 s a
    pair on CPU); LPIPS only where available (else None). Means are of per-frame values; a PSNR of inf (identical
    frames) makes the mean inf. Both sequences must have the same length and frame size.
    """
    if identity_every < 1:
        raise InputError(f"identity_every must be at least 1, got {identity_every}")
    describe = descriptor or default_face_descriptor()
    counts_before = dict(describe.counts)
    scores: dict[str, list[np.ndarray]] = {"psnr": [], "ms_ssim": [], "identity": [], "lpips": []}
    ref_iter, test_iter = iter(ref_frames), iter(test_frames)
    index, shape, lpips_available = 0, None, True
    while True:
        ref_chunk = [f for _, f in zip(range(_CHUNK), ref_iter)]
        test_chunk = [f for _, f in zip(range(len(ref_chunk) or 1), test_iter)]
        if len(ref_chunk) != len(test_chunk):
            raise InputError(f"reference and test differ in length (test ended or continued at frame "
                             f"{index + min(len(ref_chunk), len(test_chunk))})")
        if not ref_chunk:
            break
        a, b = _stack(ref_chunk), _stack(test_chunk)
        shape = shape or a.shape[1:3]
        if a.shape[1:3] != shape:
            raise InputError(f"frame {index} is {a.shape[2]}x{a.shape[1]}, earlier frames {shape[1]}x{shape[0]}")
        scores["psnr"].append(psnr(a, b))
        scores["ms_ssim"].append(ms_ssim(a, b))
        picked = [i for i in range(len(a)) if (index + i) % identity_every == 0]
        if picked:
            scores["identity"].append(identity_distance(a[picked], b[picked], descriptor=describe))
        lp = lpips(a, b) if lpips_available else None
        lpips_available = lp is not None
        if lp is not None:
            scores["lpips"].append(lp)
        index += len(a)
    if not index:
        raise InputError("no frames to compare")
    values = {k: np.concatenate(v) if v else np.empty(0) for k, v in scores.items()}
    identity = values["identity"]
    counts = {k: describe.counts[k] - counts_before[k] for k in describe.counts}
    return {
        "frames": index,
        "size": [int(shape[1]), int(shape[0])],
        "psnr_db": _summary(values["psnr"]),
        "ms_ssim": {**_summary(values["ms_ssim"]), "win_size": ms_ssim_window(*shape),
                    "weights": list(MS_SSIM_WEIGHTS)},
        "identity_distance": {**_summary(identity), "frames": len(identity),
                              "missing": int(np.isnan(identity).sum()), "every": identity_every,
                              "fallback_boxes": counts["fallback"], "detected_boxes": counts["detector"]},
        "lpips": _summary(values["lpips"]) if lpips_available else None,
    }
