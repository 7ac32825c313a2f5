"""What int8 E costs in quality: G(E_int8(x)) against G(E(x)) on validation crops, for each way of calibrating E.

    OMP_NUM_THREADS=1 python3 benchmarks/int8_encoder_quality.py --data runs/faces128 [--model BUNDLE]
        [--clips 120] [--photos 60] [--calibration prior train demo]

``--data`` is a folder made by ``sganc-stream prepare-faces`` (faces.npy, index.csv with ``split`` and ``kind``); the
crops scored are drawn (seeded) from its validation split, people the model never saw. Everything runs in ONNX
Runtime on one thread, E and G as the live call runs them. Calibrations: ``prior`` (the call's: faces the model
renders from its own latent prior, :mod:`sganc_stream.onnx_quantize`), ``train`` (64 training crops of the same
folder), ``demo`` (the 100 frames of the bundled demo clip, aligned: one person). For each it prints and records
median MS-SSIM and dlib identity distance of the decoded face against the aligned input, clips and photos apart, and
the decoded int8 face against the float32 one. Writes benchmarks/results/int8_encoder_quality.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from sganc_stream.assets import default_face_model, demo_clip  # noqa: E402
from sganc_stream.cli import main as cli  # noqa: E402
from sganc_stream.fileio import load_npy  # noqa: E402
from sganc_stream.metrics import identity_distance, ms_ssim  # noqa: E402
from sganc_stream.onnx_quantize import fit_to, prior_faces, quantize_encoder  # noqa: E402
from sganc_stream.onnx_runtime import Graph, OnnxFaceModel, graph_dir, load_onnx_face_model  # noqa: E402
from sganc_stream.video import read_frames  # noqa: E402

CALIBRATIONS = ("prior", "train", "demo")


def calibration_crops(kind: str, model: OnnxFaceModel, faces: np.ndarray, train: list[int], side: int) -> np.ndarray:
    if kind == "prior":
        return fit_to(prior_faces(model.codec, model.render), side)
    if kind == "train":
        rng = np.random.default_rng(0)
        return np.stack([faces[i] for i in sorted(rng.choice(train, 64, replace=False))])
    with tempfile.TemporaryDirectory(prefix="int8-demo-") as work:
        if cli(["align", "--size", str(side), str(demo_clip()), f"{work}/crops"]) != 0:
            raise SystemExit("int8_encoder_quality: aligning the demo clip failed")
        return np.stack(read_frames(f"{work}/crops"))


def scores(x: np.ndarray, y: np.ndarray, n_clips: int) -> dict[str, float]:
    m, d = np.asarray(ms_ssim(x, y)), np.asarray(identity_distance(x, y))
    return {"ms_ssim_clips": float(np.median(m[:n_clips])), "ms_ssim_photos": float(np.median(m[n_clips:])),
            "identity_clips": float(np.median(d[:n_clips])), "identity_photos": float(np.median(d[n_clips:]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a prepare-faces folder (faces.npy, index.csv)")
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded one)")
    p.add_argument("--clips", type=int, default=120, help="validation clip frames scored (default 120)")
    p.add_argument("--photos", type=int, default=60, help="validation photos scored (default 60)")
    p.add_argument("--calibration", nargs="+", choices=CALIBRATIONS, default=list(CALIBRATIONS))
    args = p.parse_args(argv)
    faces = load_npy(args.data / "faces.npy", mmap=True)
    with open(args.data / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pick = lambda split, kind: [int(r["i"]) for r in rows if r["split"] == split and r["kind"] == kind]  # noqa: E731
    rng = np.random.default_rng(1)
    val = [*rng.choice(pick("val", "clip"), args.clips, replace=False), *rng.choice(pick("val", "photo"), args.photos, replace=False)]
    train = pick("train", "clip") + pick("train", "photo")
    model = load_onnx_face_model(args.model or default_face_model(), encode=True, encoder_precision="fp32")
    side = model.align_size
    x = fit_to(np.stack([faces[i] for i in val]), side)
    fp32 = model.render(model.project(x))
    results: dict[str, object] = {"fp32": scores(x, fp32, args.clips)}
    print(f"fp32: {results['fp32']}", flush=True)
    float_encoder = model.encoder
    for kind in args.calibration:
        with tempfile.TemporaryDirectory(prefix="int8-") as work:
            out = Path(work) / "e8.onnx"
            quantize_encoder(graph_dir(model.model_id) / "encoder.onnx", out,
                             calibration_crops(kind, model, faces, train, side))
            model.encoder = Graph(out, 1)
        y = model.render(model.project(x))
        model.encoder = float_encoder
        row = {**scores(x, y, args.clips), "vs_fp32_ms_ssim": float(np.median(ms_ssim(fp32, y))),
               "vs_fp32_mean_abs_levels": float(np.abs(fp32.astype(np.float64) - y).mean())}
        results[f"int8_{kind}"] = row
        print(f"int8, calibrated on {kind}: {row}", flush=True)
    path = write_result("int8_encoder_quality", {
        "settings": {"data": str(args.data), "model": str(args.model or "embedded default"), "clips": args.clips,
                     "photos": args.photos, "model_id": model.model_id},
        "results": results})
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
