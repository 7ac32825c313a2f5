"""Post-training int8 quantization of E's ONNX graph, calibrated on faces the model renders from its own latent prior.

The live call's sender runs E on every frame; as an int8 graph (ONNX Runtime's static QDQ quantization: per-channel
int8 weights, uint8 activations with min–max ranges, convolutions and matrix products quantized, run with VNNI where
the CPU has it) it takes about half the time of the float32 graph. Only E is quantized: the receiver's T⁻¹ stays
float32 (the integer states, and with them the bitstream, do not depend on E's precision, SPEC §7), and G gained
nothing from int8 here (its up-sampling transposed convolutions dominate and are not sped up).

Static quantization needs calibration inputs that look like what E will see. No face data ships with the package, so
the calibration faces come from the model itself (:func:`prior_faces`): latent states drawn channel by channel from
the codec's own intra table at its finest step, mapped back by T⁻¹ and rendered by G. They are plausible, varied
faces, and the ranges they give serve unseen people about as well as ranges from training crops do: on 180
validation crops of the embedded model (120 clip frames, 60 photos; ``benchmarks/int8_encoder_quality.py``)
G(E_int8(x)) lost 0.0010 / 0.0002 median MS-SSIM (clips / photos) and gained 0.002 / 0.004 median dlib identity
distance against G(E(x)); ranges from 64 training crops did about the same, ranges from one person's clip (the demo)
worse (−0.004 / −0.007 MS-SSIM). Calibration is seeded, so one machine always makes the same graph; other machines
may differ in the last bits of a range (G's float output), which moves E's output, never the bitstream's exactness.

Needs ``onnx`` and ``onnxruntime`` (the ``onnx`` extra); never torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sganc_stream.fileio import atomic_output
from sganc_stream.latent.model import LatentCodecModel

CALIBRATION_FACES = 64  # faces rendered for the min–max ranges
CALIBRATION_SEED = 0
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def prior_faces(codec: LatentCodecModel, render: Callable[[np.ndarray], np.ndarray], n: int = CALIBRATION_FACES,
                seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` faces ``(n, size, size, 3)`` uint8 that the model generates from its latent prior.

    Each face: every channel's integer state drawn independently from the codec's intra table at its finest step
    preset (the factorized prior the entropy coder uses, Ballé et al. 2018's factorized model frozen into
    frequencies), W+ = T⁻¹(Δ · state) (:meth:`LatentCodecModel.from_state`), then ``render`` (G with its uint8
    conversion, ``(1, rows, width)`` float32 → ``(1, size, size, 3)`` uint8). Deterministic for a ``seed``."""
    table = codec.tables["intra"][0]
    cum = np.cumsum(table.freqs, axis=1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    faces = []
    for _ in range(n):
        u = rng.integers(0, cum[:, -1:], size=(len(cum), 1))  # one uniform integer per channel, below its total
        state = (cum <= u).sum(axis=1) + table.offsets  # inverse-CDF draw of each channel's symbol
        faces.append(render(codec.from_state(state, 0)[None]))
    return np.concatenate(faces)


def fit_to(faces: np.ndarray, side: int) -> np.ndarray:
    """Faces ``(n, S, S, 3)`` uint8 resampled to ``side`` (area filter down, cubic up): what E takes when its input
    side differs from G's output side (pSp takes 256 px, the official G gives 1024 px)."""
    if faces.shape[1] == side:
        return faces
    import cv2

    mode = cv2.INTER_AREA if faces.shape[1] > side else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (side, side), interpolation=mode) for f in faces])


def quantize_encoder(fp32_graph: Path, out: Path, crops: np.ndarray) -> None:
    """Write the int8 (QDQ) version of E's float32 graph ``fp32_graph`` to ``out`` (atomically), its activation
    ranges calibrated (min–max) on ``crops`` ``(n, S, S, 3)`` uint8 at E's input side S. ONNX Runtime's
    ``quant_pre_process`` (shape inference, graph optimisation) runs first, as its documentation advises."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(crops)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"x": np.ascontiguousarray(x[None])}

    with tempfile.TemporaryDirectory(prefix="sganc-quantize-") as work, atomic_output(out) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_graph), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS))


def quantize_encoder_from_prior(fp32_graph: Path, out: Path, codec: LatentCodecModel,
                                render: Callable[[np.ndarray], np.ndarray], side: int) -> None:
    """E's int8 graph as the live call makes it: :func:`quantize_encoder` calibrated on :func:`prior_faces` (``codec``,
    ``render`` as there) resampled to E's input ``side`` (:func:`fit_to`)."""
    quantize_encoder(fp32_graph, out, fit_to(prior_faces(codec, render), side))
