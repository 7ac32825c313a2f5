"""Transcode reports: rate figures from the packets, quality accumulated frame batch by frame batch.

Every number comes from :mod:`sganc_stream.metrics` (one definition of PSNR, MS-SSIM, identity distance, LPIPS);
this module only accumulates per-frame values over a clip, so a long clip needs no more memory than one batch of
frames, and lays the figures out as REPORT.json. Non-finite values (PSNR of identical frames) are written as null.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.errors import InputError
from sganc_stream.fileio import write_bytes_atomic
from sganc_stream.metrics import (IDENTITY_EVERY, face_contrast, face_lab, identity_distance, lpips, ms_ssim, ms_ssim_window,
                                  psnr)


def _mean(values: list[float]) -> float | None:
    kept = np.asarray(values, dtype=np.float64)
    kept = kept[np.isfinite(kept)]
    return float(kept.mean()) if len(kept) else None


class QualityMeter:
    """Per-frame PSNR, MS-SSIM, identity distance (every ``identity_every``-th frame) and LPIPS (where available), and
    the skin of the face's central box: CIELAB colour of reference and test (``metrics.face_lab``) and their luma
    contrast (``metrics.face_contrast``)."""

    def __init__(self, identity_every: int = IDENTITY_EVERY) -> None:
        if identity_every < 1:
            raise InputError(f"identity_every must be at least 1, got {identity_every}")
        self.identity_every = identity_every
        self.values: dict[str, list[float]] = {"psnr": [], "ms_ssim": [], "identity_distance": [], "lpips": []}
        self.lab: dict[str, list[np.ndarray]] = {"ref": [], "test": []}
        self.contrast: dict[str, list[float]] = {"ref": [], "test": []}
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.lpips_available = True

    def add(self, ref: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Score a batch ``(n, H, W, 3)`` of test frames against their references; returns the batch's PSNRs."""
        p = np.atleast_1d(psnr(ref, test))
        self.values["psnr"] += p.tolist()
        self.values["ms_ssim"] += np.atleast_1d(ms_ssim(ref, test)).tolist()
        picked = [i for i in range(len(ref)) if (self.frames + i) % self.identity_every == 0]
        if picked:
            self.values["identity_distance"] += np.atleast_1d(identity_distance(ref[picked], test[picked])).tolist()
        if self.lpips_available:
            lp = lpips(ref, test)
            self.lpips_available = lp is not None
            if lp is not None:
                self.values["lpips"] += np.atleast_1d(lp).tolist()
        for key, x in (("ref", ref), ("test", test)):
            self.lab[key].append(np.atleast_2d(face_lab(x)))
            self.contrast[key] += np.atleast_1d(face_contrast(x)).tolist()
        self.size = (ref.shape[2], ref.shape[1])
        self.frames += len(ref)
        return p

    def summary(self) -> dict[str, Any]:
        """Means over frames (NaN identity distances, where no face descriptor could be made, left out)."""
        ident = np.asarray(self.values["identity_distance"], dtype=np.float64)
        return {
            "psnr": _mean(self.values["psnr"]),
            "ms_ssim": _mean(self.values["ms_ssim"]),
            "identity_distance": _mean(self.values["identity_distance"]),
            "lpips": _mean(self.values["lpips"]) if self.lpips_available else None,
            "lpips_available": self.lpips_available,
            "frames": self.frames,
            "size": list(self.size) if self.size else None,
            "ms_ssim_win_size": ms_ssim_window(self.size[1], self.size[0]) if self.size else None,
            "identity_every": self.identity_every,
            "identity_missing": int(np.isnan(ident).sum()),
            "skin": self._skin(),
        }

    def _skin(self) -> dict[str, Any] | None:
        """Mean CIELAB (L*, a*, b*) of the face's central box in the references and the test frames; the test's
        difference, test minus reference: ΔL* (< 0 darker), ΔC*ab (< 0 greyer), ΔH*ab (the hue part, ≥ 0) and ΔE*ab
        (CIE 1976, Euclidean in L*a*b*: ΔE² = ΔL² + ΔC² + ΔH²; about 2.3 is just noticeable); and the ratio of their
        mean luma contrasts (``metrics.face_contrast``; < 1: flatter shading). None before any frame."""
        if not self.frames:
            return None
        ref, test = np.concatenate(self.lab["ref"]).mean(0), np.concatenate(self.lab["test"]).mean(0)
        chroma = lambda lab: float(np.hypot(lab[1], lab[2]))  # noqa: E731
        contrast_ref = float(np.mean(self.contrast["ref"]))
        delta_e = float(np.linalg.norm(test - ref))
        delta_l, delta_c = float(test[0] - ref[0]), chroma(test) - chroma(ref)
        return {"lab_reference": [round(float(v), 2) for v in ref], "lab_test": [round(float(v), 2) for v in test],
                "delta_l": round(delta_l, 2), "delta_chroma": round(delta_c, 2),
                "delta_hue": round(float(np.sqrt(max(delta_e ** 2 - delta_l ** 2 - delta_c ** 2, 0.0))), 2),
                "delta_e76": round(delta_e, 2),
                "contrast_ratio": round(float(np.mean(self.contrast["test"])) / contrast_ref, 3) if contrast_ref > 0 else None}


def stream_report(header: StreamHeader, size: int, frames: list[dict[str, Any]], *, timing: dict[str, float],
                  decoded: bool, quality: dict[str, Any] | None) -> dict[str, Any]:
    """The REPORT.json layout. ``size`` is the .sgnc file size; ``frames`` the per-frame records (type, bytes...),
    one per input frame. Rates count every frame, no-face frames included; quality counts face frames only."""
    n = len(frames)
    bits = 8 * np.asarray([f["bytes"] for f in frames], dtype=np.float64)
    types = [f["type"] for f in frames]
    faces = [i for i, t in enumerate(types) if t != "no_face"]
    return {
        "frames": n,
        "no_face_frames": n - len(faces),  # coded as no-face packets: decoded as blank frames, nothing invented
        "first_face_frame": faces[0] if faces else None,  # the start offset: frames before it have no face
        "identity_changes": types.count("new_face"),  # frames from which on another person is coded
        "fps": header.fps,
        "bytes": size,
        "kbps": 8 * size / n * header.fps / 1000,
        "bits_per_frame": {"mean": float(bits.mean()), "p95": float(np.percentile(bits, 95))},
        "stream": {"model_id": header.model_id, "rows": header.rows, "width": header.width, "mode": header.mode,
                   "g": header.g, "step": header.step, "keyframe_interval": header.keyframe_interval,
                   "version": header.version, "residual": header.residual, "steps": list(header.steps),
                   "context": header.context, "decimation": header.decimation},
        "quality": quality,
        "speed": {"encode_fps": n / max(timing["encode"], 1e-9),
                  "decode_fps": n / max(timing["decode"], 1e-9) if decoded else None},
        "per_frame": frames,
    }


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Atomic JSON (strict: NaN and infinity become null)."""
    write_bytes_atomic(path, (json.dumps(_strict(data), indent=1) + "\n").encode())


def _strict(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x
