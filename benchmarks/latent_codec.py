"""Latent codec figures: bits/frame, rANS vs ideal bits, and per-frame time, on held-out synthetic sequences.

    python benchmarks/latent_codec.py [--model M] [--frames 100] [--threads 1] [--runtime torch|onnx]

Held-out sequences use seeds the default codec never saw in training (its training set is
`sganc-stream latents synth` with seeds 1000+). Writes benchmarks/results/latent_codec.json (latent_codec_onnx.json with
``--runtime onnx``: T and T⁻¹ in ONNX Runtime, sganc_stream.onnx_runtime) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common import write_result
from sganc_stream.assets import default_latent_codec
from sganc_stream.entropy.rans import decode_parts, encode_parts
from sganc_stream.latent.codec import LatentStreamEncoder, StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence, time_coding
from sganc_stream.latent.synthetic import synthetic_latents


def rans_ms(model, latents: np.ndarray, params: StreamParams) -> tuple[float, float]:
    """Median ms/frame of rANS encode and decode alone (tables and coder; no T)."""
    enc = LatentStreamEncoder(model, params)
    c = model.channels
    te, td = [], []
    prev = None
    for w in latents:
        y = np.rint(model.to_proxy(w) / model.steps[params.step_index]).astype(np.int64)
        values, table = (y, enc.intra_table) if prev is None else (y - prev, enc.diff_table)
        prev = y
        t0 = time.perf_counter()
        payload = encode_parts([(values, table)])
        t1 = time.perf_counter()
        decode_parts(payload, [(table, c)])
        td.append(time.perf_counter() - t1)
        te.append(t1 - t0)
    return 1e3 * float(np.median(te)), 1e3 * float(np.median(td))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="where T and T⁻¹ run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.runtime == "onnx":
        from sganc_stream.onnx_runtime import load_onnx_codec

        model = load_onnx_codec(args.model or default_latent_codec(), threads=args.threads)
    else:
        model = load_latent_codec(args.model or default_latent_codec())
    seqs = {k: synthetic_latents(k, args.frames, model.rows, model.width, seed=s) for k, s in (("smooth", 7), ("walk", 8))}
    rows = []
    for kind, latents in seqs.items():
        for mode, g in (("open", 10), ("open", 0), ("closed", 0), ("intra", 0)):
            for si, step in enumerate(model.steps):
                params = StreamParams(mode, g, si)
                res = encode_sequence(model, latents, params, args.fps)
                decoded = decode_bytes(model, res.data)
                n = len(latents)
                rows.append({
                    "sequence": kind, "mode": mode, "g": g, "step": step, "frames": n,
                    "bits_per_frame": 8 * len(res.data) / n,
                    "kbps": 8 * len(res.data) / n * args.fps / 1000,
                    "inter_bits_per_frame": float(np.mean([b for b, t in zip(res.payload_bits, res.frame_types) if t != "intra"] or [np.nan])),
                    "rans_over_ideal_pct": 100 * (sum(res.payload_bits) / sum(res.ideal_bits) - 1),
                    "file_over_ideal_pct": 100 * (8 * len(res.data) / sum(res.ideal_bits) - 1),
                    "latent_mse": float(np.mean((decoded - latents) ** 2)),
                    "decode_equals_recon": bool(np.array_equal(decoded, res.recon)),
                })
    base = StreamParams("open", 10, len(model.steps) // 2)
    speed = time_coding(model, seqs["walk"], base)
    r_enc, r_dec = rans_ms(model, seqs["walk"], base)
    speed.update({"rans_encode_ms": r_enc, "rans_decode_ms": r_dec, "threads": args.threads, "runtime": args.runtime})
    path = write_result("latent_codec" if args.runtime == "torch" else "latent_codec_onnx", {"model_id": model.model_id, "shape": [model.rows, model.width], "rows": rows, "speed_ms_per_frame": speed})
    print(f"model {model.model_id[:12]}… ({model.rows}x{model.width}); results in {path}\n")
    print("| sequence | mode | g | step | bits/frame | kbps @25 | rANS vs ideal | file vs ideal | latent MSE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sequence']} | {r['mode']} | {r['g'] or '—'} | {r['step']:g} | {r['bits_per_frame']:.0f} | {r['kbps']:.1f} | "
              f"{r['rans_over_ideal_pct']:+.2f}% | {r['file_over_ideal_pct']:+.2f}% | {r['latent_mse']:.2e} |")
    print(f"\nper frame, median, {args.threads} thread(s): full encode {speed['encode_ms']:.1f} ms, full decode {speed['decode_ms']:.1f} ms, "
          f"rANS encode {r_enc:.2f} ms, rANS decode {r_dec:.2f} ms")
    return 0 if all(r["decode_equals_recon"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
