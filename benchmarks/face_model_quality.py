"""Quality and speed of a face-model bundle on validation identities (benchmark, not a test).

Projection: aligned input x vs G(E(x)). Coded: each validation clip's W+ sequence through the bundle's latent
codec (open loop, residual period g, step preset) and back, then G. Metrics from sganc_stream.metrics:
MS-SSIM (window per frame size, see there) and dlib 128-D identity distance. Speed: CPU ms/frame of E and G at
batch 1, float32, for each thread count (with the machine's load average, since other work skews it). Writes JSON (command, commit, machine) and a picture with rows
aligned input | G(E(x)) | coded-and-decoded.

    python3 benchmarks/face_model_quality.py --data runs/faces64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sganc_stream.assets import DEFAULT_FACE_MODEL
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.metrics import identity_distance, ms_ssim, ms_ssim_window
from sganc_stream.training.face_bundle import encode_faces, load_face_models
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import to_uint8

from common import provenance

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def generate(g: torch.nn.Module, wplus: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([to_uint8(g(torch.from_numpy(wplus[i:i + batch]))) for i in range(0, len(wplus), batch)])


def summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "median": float(np.median(v)), "mean": float(v.mean()), "p10": float(np.percentile(v, 10)),
            "p90": float(np.percentile(v, 90)), "missing": int(len(values) - len(v))}


@torch.no_grad()
def time_ms(fn, x: torch.Tensor, repeats: int) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_FACE_MODEL), help="bundle (default: the embedded face model)")
    ap.add_argument("--data", required=True, help="prepare-faces folder (validation split is used)")
    ap.add_argument("--photos", type=int, default=300, help="validation photos measured")
    ap.add_argument("--clip-frames", type=int, default=100, help="frames per validation clip coded")
    ap.add_argument("--g", type=int, default=10, help="open-loop residual period")
    ap.add_argument("--step-index", type=int, default=1, help="codec step preset")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the speed figures")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/face_model_quality.json"))
    ap.add_argument("--picture", default=str(ROOT / "docs/default_model_samples.png"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    g, e = load_face_models(args.model)
    codec = load_latent_codec(args.model)
    data = load_prepared(args.data)
    size = e.input_size
    photos = data.select("val", "photo")
    photos = photos[np.linspace(0, len(photos) - 1, min(args.photos, len(photos))).astype(int)]
    x_photo = np.asarray(data.images[photos])
    y_photo = generate(g, encode_faces(e, x_photo))

    x_clip, y_clip, c_clip, bits = [], [], [], []
    params = StreamParams(mode="open", g=args.g, step_index=args.step_index)
    for _source, rows in sorted(data.clip_sequences("val").items()):
        x = np.asarray(data.images[rows[: args.clip_frames]])
        w = encode_faces(e, x)
        res = encode_sequence(codec, w, params)
        w_hat = decode_bytes(codec, res.data)
        x_clip.append(x)
        y_clip.append(generate(g, w))
        c_clip.append(generate(g, w_hat))
        bits += res.payload_bits
    x_clip, y_clip, c_clip = (np.concatenate(a) for a in (x_clip, y_clip, c_clip))
    x_all, y_all = np.concatenate([x_photo, x_clip]), np.concatenate([y_photo, y_clip])

    results = {
        "projection": {"frames": len(x_all), "photos": len(x_photo), "clip_frames": len(x_clip),
                       "ms_ssim": summary(ms_ssim(x_all, y_all)), "identity_distance": summary(identity_distance(x_all, y_all)),
                       "ms_ssim_photos": summary(ms_ssim(x_photo, y_photo)), "ms_ssim_clips": summary(ms_ssim(x_clip, y_clip))},
        "coded": {"frames": len(x_clip), "mode": "open", "g": args.g, "step": codec.steps[args.step_index],
                  "bits_per_frame_mean": float(np.mean(bits)), "kbit_per_s_at_25fps": float(np.mean(bits)) * 25 / 1000,
                  "ms_ssim": summary(ms_ssim(x_clip, c_clip)), "identity_distance": summary(identity_distance(x_clip, c_clip))},
        "ms_ssim_window": ms_ssim_window(size, size),
    }
    x1 = torch.from_numpy(x_clip[:1]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        w1 = e(x1)
    speed = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        speed[f"{threads}_threads"] = {"encoder": time_ms(e, x1, 50), "generator": time_ms(g, w1, 50)}
    torch.set_num_threads(1)
    results["cpu_ms_per_frame"] = {**speed, "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}

    # Picture: 8 validation clip frames spread over the clips (photos have no coded path); 2x nearest-neighbour.
    pick = np.linspace(0, len(x_clip) - 1, 8).astype(int)
    rows = [x_clip[pick], y_clip[pick], c_clip[pick]]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.picture, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    payload = {**provenance(), "model": str(args.model), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
