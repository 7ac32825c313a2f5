"""Quality and speed of a face-model bundle on validation identities (benchmark, not a test).

Projection: aligned input x vs G(E(x)). Coded: each validation clip's W+ sequence through the bundle's latent
codec (open loop, residual period g, step preset) and back, then G. Metrics from sganc_stream.metrics on both
images bicubically upsampled to ``--eval-size`` (256 by default, so MS-SSIM's five scales use the standard
11-tap window and dlib's detector sees a face of usual size): MS-SSIM and dlib 128-D identity distance; at the
data's size, the detail ratio (Laplacian energy of G(E(x)) over that of x: below 1 is over-smoothing). A model
smaller than the prepared faces (v0's 64 px on ``runs/faces128``) sees area-downsampled inputs and its output is
enlarged to the data's size, so two models are compared on the same aligned crops.
``--model`` is a bundle or a training ``checkpoint.pt`` (EMA weights, ``--raw`` for the raw ones); a checkpoint
has no latent codec, so give ``--codec`` or ``--projection-only``. Speed: CPU ms/frame of E and G at
batch 1, float32, for each thread count (with the machine's load average, since other work skews it). Writes JSON (command, commit, machine) and a picture with rows
aligned input | G(E(x)) | coded-and-decoded. ``--split train`` measures the training identities instead: the gap to
the validation figures is what the model memorised (its training clips' people and scenes) rather than learned.

    python3 benchmarks/face_model_quality.py --data runs/faces128
    python3 benchmarks/face_model_quality.py --data runs/faces128 --model runs/face128/checkpoint.pt --projection-only
    python3 benchmarks/face_model_quality.py --summarize benchmarks/results/face_model_v1_*.json   # one line each
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
from tqdm import tqdm

from sganc_stream.assets import DEFAULT_FACE_MODEL
from sganc_stream.fileio import write_bytes_atomic
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.metrics import detail_ratio, face_contrast, face_lab, face_luma, identity_distance, ms_ssim, ms_ssim_window
from sganc_stream.training.face_bundle import encode_faces, load_face_models
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import to_uint8
from sganc_stream.video import resize_square

from common import provenance

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def generate(g: torch.nn.Module, wplus: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([to_uint8(g(torch.from_numpy(wplus[i:i + batch]))) for i in range(0, len(wplus), batch)])


def upsampled(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, s, s, 3) → (n, size, size, 3), bicubic (unchanged when already that size)."""
    if images.shape[1] == size:
        return images
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in images])


def chroma(images: np.ndarray) -> np.ndarray:
    """CIELAB chroma C*ab of each face's central skin box (``sganc_stream.metrics.face_lab``)."""
    lab = face_lab(images)
    return np.hypot(lab[:, 1], lab[:, 2])


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


def summary_line(name: str, results: dict) -> str:
    """One line of a record's headline projection figures (medians): MS-SSIM (photos; clips), identity distance
    (clips), skin luma slope, darkest quarter's luma shift, the mean over clips of the absolute per-clip luma shift
    (older records lack it: nan), chroma slope, detail ratio; and, when coded, MS-SSIM / identity / kbit/s."""
    r = results["projection"]
    t = r["skin_tone"]
    clips = r.get("skin_tone_clips") or {}
    shift = float(np.mean([abs(c["output"] - c["input"]) for c in clips.values()])) if clips else float("nan")
    line = (f"{name:40s} MS-SSIM {r['ms_ssim']['median']:.3f} (photos {r['ms_ssim_photos']['median']:.3f}; clips "
            f"{r['ms_ssim_clips']['median']:.3f}) identity {r['identity_distance']['median']:.3f} (clips "
            f"{r['identity_distance_clips']['median']:.3f}) luma slope {t['slope']:.3f} darkest {t['shift_darkest_quarter']:+.1f} "
            f"clip |shift| {shift:.1f} chroma slope {t.get('chroma_slope', float('nan')):.3f} "
            f"detail {r['detail_ratio']['median']:.3f}")
    if "coded" in results:
        c = results["coded"]
        line += (f" | coded MS-SSIM {c['ms_ssim']['median']:.3f} identity {c['identity_distance']['median']:.3f} "
                 f"{c['kbit_per_s_at_25fps']:.1f} kbit/s")
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarize", nargs="+", metavar="RECORD.json",
                    help="measure nothing: print each record's headline figures on one line, to compare runs")
    ap.add_argument("--model", default=str(DEFAULT_FACE_MODEL),
                    help="bundle or training checkpoint.pt (default: the embedded face model)")
    ap.add_argument("--raw", action="store_true", help="with a checkpoint.pt: raw weights instead of the EMA ones")
    ap.add_argument("--codec", help="latent codec file (default: the --model bundle's)")
    ap.add_argument("--projection-only", action="store_true", help="skip latent coding (no codec needed)")
    ap.add_argument("--eval-size", type=int, default=256, help="side both images are upsampled to before the metrics")
    ap.add_argument("--data", help="prepare-faces folder (required unless --summarize)")
    ap.add_argument("--split", choices=["val", "train"], default="val",
                    help="identities measured: val (never seen in training; the aims), or train (a generalisation "
                         "check: the gap between the two is what the model memorised)")
    ap.add_argument("--photos", type=int, default=300, help="photos of the split measured")
    ap.add_argument("--clip-frames", type=int, default=100, help="frames per clip of the split measured")
    ap.add_argument("--g", type=int, default=10, help="open-loop residual period")
    ap.add_argument("--step-index", type=int, default=1, help="codec step preset")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the speed figures")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/face_model_quality.json"))
    ap.add_argument("--picture", help="contact sheet PNG (default: --out with .png; the README's picture of the "
                    "shipped model is docs/default_model_samples.png)")
    args = ap.parse_args()
    if args.summarize:
        for record in args.summarize:
            print(summary_line(Path(record).stem, json.loads(Path(record).read_text())["results"]))
        return 0
    if args.data is None:
        ap.error("--data is required (or --summarize)")

    torch.set_num_threads(1)
    g, e = load_face_models(args.model, ema=not args.raw)
    codec = None if args.projection_only else load_latent_codec(args.codec or args.model)
    data = load_prepared(args.data)
    size = e.input_size
    photos = data.select(args.split, "photo")
    photos = photos[np.linspace(0, len(photos) - 1, min(args.photos, len(photos))).astype(int)]
    x_photo = np.asarray(data.images[photos])
    # A model smaller than the data sees area-downsampled faces and is judged against the data's own faces, with its
    # output enlarged like the inputs: what a user of each model gets from the same aligned crop.
    side = x_photo.shape[1]
    y_photo = resize_square(generate(g, encode_faces(e, resize_square(x_photo, size))), side)

    x_clip, y_clip, c_clip, bits = [], [], [], []
    clip_lengths: list[int] = []
    clip_luma: dict[str, dict[str, float]] = {}  # per clip: mean face-centre luma of input and of G(E(x))
    params = StreamParams(mode="open", g=args.g, step_index=args.step_index)
    clips = sorted(data.clip_sequences(args.split).items())
    for source, rows in tqdm(clips, desc=f"{args.split} clips (E, G" + (", codec)" if codec else ")"), unit="clip"):
        x = np.asarray(data.images[rows[: args.clip_frames]])
        w = encode_faces(e, resize_square(x, size))
        x_clip.append(x)
        clip_lengths.append(len(x))
        y_clip.append(resize_square(generate(g, w), side))
        clip_luma[source] = {"input": float(np.mean(face_luma(x))), "output": float(np.mean(face_luma(y_clip[-1]))),
                             "input_chroma": float(np.mean(chroma(x))), "output_chroma": float(np.mean(chroma(y_clip[-1]))),
                             "contrast_ratio": float(np.mean(face_contrast(y_clip[-1])) / max(np.mean(face_contrast(x)), 1e-6))}
        if codec is not None:
            res = encode_sequence(codec, w, params)
            c_clip.append(resize_square(generate(g, decode_bytes(codec, res.data)), side))
            bits += res.payload_bits
    x_clip, y_clip = np.concatenate(x_clip), np.concatenate(y_clip)
    x_all, y_all = np.concatenate([x_photo, x_clip]), np.concatenate([y_photo, y_clip])
    n = args.eval_size
    print(f"metrics (MS-SSIM, dlib identity at {n} px) on {len(x_photo)} photos and {len(x_clip)} clip frames",
          file=sys.stderr)

    def ms(a: np.ndarray, b: np.ndarray) -> dict:
        return summary(ms_ssim(upsampled(a, n), upsampled(b, n)))

    def ident(a: np.ndarray, b: np.ndarray) -> dict:
        return summary(identity_distance(upsampled(a, n), upsampled(b, n)))

    def tone(a: np.ndarray, b: np.ndarray) -> dict:
        """Skin tone kept? Luma (below) and CIELAB chroma C*ab of the same skin box: its slope of output on input and
        median shift (negative: desaturated skin, e.g. brown skin rendered greyish); and the shading kept: the ratio
        of output to input luma contrast (``metrics.face_contrast``) per face, below 1 flatter."""
        ca, cb = chroma(a), chroma(b)
        contrast = face_contrast(b) / np.maximum(face_contrast(a), 1e-6)
        return {**tone_luma(a, b), "chroma_input": summary(ca), "chroma_shift": summary(cb - ca),
                "chroma_slope": float(np.polyfit(ca, cb, 1)[0]), "contrast_ratio": summary(contrast)}

    def tone_luma(a: np.ndarray, b: np.ndarray) -> dict:
        """Skin tone kept? Face-centre luma of input and output; slope of output on input (1: kept, < 1: pulled
        toward the mean); the shift of the darkest and lightest quarter of the inputs."""
        la, lb = face_luma(a), face_luma(b)
        dark, light = la <= np.quantile(la, 0.25), la >= np.quantile(la, 0.75)
        return {"input_luma": summary(la), "shift": summary(lb - la), "slope": float(np.polyfit(la, lb, 1)[0]),
                "shift_darkest_quarter": float(np.median((lb - la)[dark])),
                "shift_lightest_quarter": float(np.median((lb - la)[light]))}

    def per_frame(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MS-SSIM and dlib identity distance of each frame pair, (len(a),) float64 each (NaN: no face found)."""
        ua, ub = upsampled(a, n), upsampled(b, n)
        return np.atleast_1d(ms_ssim(ua, ub)), np.atleast_1d(identity_distance(ua, ub))

    ms_photo, id_photo = per_frame(x_photo, y_photo)
    ms_clip, id_clip = per_frame(x_clip, y_clip)
    ends = np.cumsum([0] + clip_lengths)
    per_clip = {source: {"frames": int(b - a), "ms_ssim": float(np.median(ms_clip[a:b])),
                         "identity_distance": float(np.nanmedian(id_clip[a:b])) if np.isfinite(id_clip[a:b]).any() else None}
                for (source, _), a, b in zip(clips, ends[:-1], ends[1:])}
    results = {
        "projection": {"frames": len(x_all), "photos": len(x_photo), "clip_frames": len(x_clip),
                       "ms_ssim": summary(np.concatenate([ms_photo, ms_clip])),
                       "identity_distance": summary(np.concatenate([id_photo, id_clip])),
                       "ms_ssim_photos": summary(ms_photo), "ms_ssim_clips": summary(ms_clip),
                       "identity_distance_clips": summary(id_clip), "per_clip": per_clip,
                       "detail_ratio": summary(detail_ratio(x_all, y_all)), "skin_tone": tone(x_all, y_all),
                       "skin_tone_clips": clip_luma},
        "model_size": size, "data_size": side, "eval_size": n, "ms_ssim_window": ms_ssim_window(n, n),
    }
    if codec is not None:
        c_clip = np.concatenate(c_clip)
        results["coded"] = {"frames": len(x_clip), "mode": "open", "g": args.g, "step": codec.steps[args.step_index],
                            "bits_per_frame_mean": float(np.mean(bits)),
                            "kbit_per_s_at_25fps": float(np.mean(bits)) * 25 / 1000,
                            "ms_ssim": ms(x_clip, c_clip), "identity_distance": ident(x_clip, c_clip)}
    x1 = torch.from_numpy(resize_square(x_clip[:1], size)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        w1 = e(x1)
    speed = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        speed[f"{threads}_threads"] = {"encoder": time_ms(e, x1, 50), "generator": time_ms(g, w1, 50)}
    torch.set_num_threads(1)
    results["cpu_ms_per_frame"] = {**speed, "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}

    # Picture: 8 validation clip frames spread over the clips (photos have no coded path), 256 px shown.
    pick = np.linspace(0, len(x_clip) - 1, 8).astype(int)
    rows = [x_clip[pick], y_clip[pick]] + ([c_clip[pick]] if codec is not None else [])
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = cv2.resize(grid, None, fx=256 / side, fy=256 / side, interpolation=cv2.INTER_NEAREST)
    picture = Path(args.picture) if args.picture else Path(args.out).with_suffix(".png")
    picture.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    assert ok
    write_bytes_atomic(picture, png.tobytes())

    payload = {**provenance(), "model": str(args.model), "split": args.split, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Path(args.out), json.dumps(payload, indent=1).encode())
    print(json.dumps(results, indent=1))
    print(summary_line(Path(args.out).stem, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
