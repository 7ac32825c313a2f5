"""The identity loss's fixed chip warp, measured and checked on prepared FFHQ-recipe crops (benchmark, not a test).

1. Warp: on ``--n`` photo crops, dlib's own chip-to-crop map per crop (``identity.chip_warp_of``); their mean is
   ``identity.CHIP_WARP``. Reports the mean, its difference from the constant, and how far one face's chip corners
   lie from the mean warp's (chip pixels).
2. Descriptors: port-through-mean-warp vs dlib's full pipeline (detector, 68 landmarks, get_face_chip,
   compute_face_descriptor) on the same crop; and port on the crop's own exact warp vs dlib.
3. Distances through the warp: a crop vs itself re-aligned (landmarks found again on the crop, FFHQ quad, re-crop),
   same-clip frames at least 2 s apart, and photos of different identities; dlib's pipeline distance beside each.
4. Speed: forward, and forward+backward of the loss (target side forward only), batch 16, one thread, for 128 and
   256 px crops: best wall-clock and best CPU time of ``--repeats`` calls.

    python3 benchmarks/dlib_chip_warp.py --faces runs/faces128 --n 400 --pairs 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from sganc_stream.face.dlib_resnet import CHIP_SIZE
from sganc_stream.face.tracker import FaceFlags, VideoAligner
from sganc_stream.metrics import FaceDescriptor
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.identity import CHIP_WARP, IdentityLoss, chip_warp_of

from common import write_result


def stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "median": float(np.median(v)), "p05": float(np.percentile(v, 5)),
            "p95": float(np.percentile(v, 95)), "max": float(v.max()), "frac_below_0.6": float((v < 0.6).mean())}


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def corner_error(theta: np.ndarray, mean: np.ndarray) -> float:
    """Largest chip-corner displacement (chip pixels) between a crop's exact warp and the mean warp."""
    corners = np.array([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], dtype=np.float64)
    diff = corners @ (theta - mean).T  # crop normalised units
    scale = np.linalg.norm(mean[:, :2], axis=0).max()
    return float(np.abs(diff).max() / scale * CHIP_SIZE / 2)


def time_it(fn, repeats: int) -> dict[str, float]:
    """Best wall-clock and best process CPU time (ms) of ``repeats`` calls after one warm-up.

    On one thread CPU time is what the call costs when it has a core to itself; wall time also counts waiting for
    one on a shared machine.
    """
    fn()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return {"wall_ms": round(1000 * wall, 1), "cpu_ms": round(1000 * cpu, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default="runs/faces128", help="prepared face folder (prepare-faces output)")
    ap.add_argument("--n", type=int, default=400, help="photo crops for the warp and descriptor comparisons")
    ap.add_argument("--pairs", type=int, default=200, help="pairs per distance distribution")
    ap.add_argument("--repeats", type=int, default=10, help="timing repeats (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="dlib_chip_warp", help="result file name under benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    faces = load_prepared(args.faces)
    photos = faces.select(kind="photo")
    chosen = np.sort(rng.choice(photos, size=min(args.n, len(photos)), replace=False))
    crops = np.asarray(faces.images[chosen])
    size = crops.shape[1]
    describe = FaceDescriptor(fallback=False)
    loss = IdentityLoss()

    # 1. the warp, and 2. dlib's descriptor of each crop
    thetas, reference, kept = [], [], []
    for i, crop in enumerate(tqdm(crops, desc="dlib per crop")):
        crop = np.ascontiguousarray(crop)
        box, _ = describe.face_box(crop)
        if box is None:
            continue
        shape = describe.predictor(crop, box)
        thetas.append(chip_warp_of(crop, shape))
        reference.append(np.asarray(describe.encoder.compute_face_descriptor(crop, shape)))
        kept.append(i)
    thetas_a, reference_a, kept_a = np.stack(thetas), np.stack(reference), np.array(kept)
    mean = thetas_a.mean(axis=0)
    constant = np.array(CHIP_WARP)
    warp = {"crops": len(crops), "faces_found": len(kept), "crop_size": size, "mean": mean.round(6).tolist(),
            "std": thetas_a.std(axis=0).round(6).tolist(), "constant": constant.tolist(),
            "max_abs_mean_minus_constant": float(np.abs(mean - constant).max()),
            "corner_error_chip_px": stats([corner_error(t, mean) for t in thetas_a])}

    with torch.no_grad():
        x = to_tensor(crops[kept_a])
        ours = torch.cat([loss.descriptors(b) for b in x.split(32)]).double().numpy()
        exact_thetas = torch.from_numpy(thetas_a).float()
        exact_a = torch.cat([loss.descriptors(b, t) for b, t in zip(x.split(32), exact_thetas.split(32))]).double().numpy()
    descriptors = {"mean_warp_vs_dlib": stats(np.linalg.norm(ours - reference_a, axis=1)),
                   "exact_warp_vs_dlib": stats(np.linalg.norm(exact_a - reference_a, axis=1))}

    # 3. distances through the warp
    aligner = VideoAligner(size, "dlib", smoothing=False, redetect_every=1)  # prepare-faces' photo alignment
    self_pairs, self_dlib = [], []
    for crop in tqdm(crops[kept_a][: args.pairs], desc="re-align"):
        aligner.reset()
        face = aligner.align(np.ascontiguousarray(crop))
        if not face.flags & FaceFlags.DETECTED:
            continue
        again = face.crop
        with torch.no_grad():
            self_pairs.append(float(loss.compare(to_tensor(crop[None]), to_tensor(again[None])).distance))
        a, b = describe(crop), describe(again)
        if a is not None and b is not None:
            self_dlib.append(float(np.linalg.norm(a - b)))
    identities = [faces.index[i]["identity"] for i in chosen[kept_a]]
    diff = [(i, j) for i, j in rng.integers(0, len(kept_a), size=(4 * args.pairs, 2)) if identities[i] != identities[j]]
    diff = diff[: args.pairs]
    diff_port = [float(np.linalg.norm(ours[i] - ours[j])) for i, j in diff]
    diff_dlib = [float(np.linalg.norm(reference_a[i] - reference_a[j])) for i, j in diff]
    same_port, same_dlib = [], []
    seqs = [s for s in faces.clip_sequences("val").values() if len(s) > 60]
    for _ in tqdm(range(args.pairs if seqs else 0), desc="same clip"):
        seq = seqs[rng.integers(len(seqs))]
        i = rng.integers(0, len(seq) - 50)
        j = rng.integers(i + 50, len(seq))
        pair = np.asarray(faces.images[[seq[i], seq[j]]])
        with torch.no_grad():
            d = loss.descriptors(to_tensor(pair)).double().numpy()
        same_port.append(float(np.linalg.norm(d[0] - d[1])))
        a, b = describe(pair[0]), describe(pair[1])
        if a is not None and b is not None:
            same_dlib.append(float(np.linalg.norm(a - b)))
    distances = {"self_vs_realigned": {"port_warp": stats(self_pairs), "dlib": stats(self_dlib)},
                 "same_clip_2s_apart": {"port_warp": stats(same_port) if same_port else None,
                                        "dlib": stats(same_dlib) if same_dlib else None},
                 "different_identities": {"port_warp": stats(diff_port), "dlib": stats(diff_dlib)}}

    # 4. speed
    speed = {}
    for s in (128, 256):
        xb, tb = torch.rand(16, 3, s, s) * 2 - 1, torch.rand(16, 3, s, s) * 2 - 1

        def forward() -> None:
            with torch.no_grad():
                loss.descriptors(xb)

        def backward() -> None:
            xg = xb.clone().requires_grad_(True)
            loss(xg, tb).backward()

        def backward_both() -> None:
            xg = xb.clone().requires_grad_(True)
            terms = loss.compare(xg, tb)
            (terms.distance.mean() + terms.perceptual.mean()).backward()

        speed[f"{s}px_batch16"] = {"forward": time_it(forward, args.repeats),
                                   "loss_forward_backward": time_it(backward, args.repeats),
                                   "loss_and_perceptual_forward_backward": time_it(backward_both, args.repeats)}

    result = {"faces": str(args.faces), "seed": args.seed, "warp": warp, "descriptors": descriptors,
              "distances": distances, "speed_one_thread": speed}
    path = write_result(args.name, result)
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
