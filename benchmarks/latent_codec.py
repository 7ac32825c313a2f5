"""Latent codec figures: bits/frame, rANS vs ideal bits, and per-frame time, on held-out synthetic sequences.

    python benchmarks/latent_codec.py [--model M] [--frames 100] [--threads 1] [--runtime numpy|onnx]
        [--latents W.npy] [--out NAME]      # time real W+ (e.g. the face model's on a held-out clip)

Held-out sequences use seeds the default codec never saw in training (its training set is
`sganc-stream latents synth` with seeds 1000+). T and T⁻¹ run in the codec's default runner (numpy, stage groups
batched: sganc_stream.latent.numpy_flow) or, with ``--runtime onnx``, in ONNX Runtime (sganc_stream.onnx_runtime).
The speed section times that runner and PyTorch eager (the reference, sganc_stream.latent.flow.TorchFlows) in the
same run, frame by frame in turn so both see the same load, and reports medians, their ratio and the load average.
Writes benchmarks/results/latent_codec.json (latent_codec_onnx.json with ``--runtime onnx``) and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch

from common import write_result
from sganc_stream.assets import default_latent_codec
from sganc_stream.entropy.rans import encode_parts
from sganc_stream.latent.codec import LatentStreamDecoder, LatentStreamEncoder, StreamParams
from sganc_stream.latent.flow import TorchFlows
from sganc_stream.latent.model import LatentCodecModel, load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.latent.synthetic import synthetic_latents

STAGES = ("encode", "recon", "decode", "rans_encode", "rans_decode")


def stage_ms(models: dict[str, LatentCodecModel], latents: np.ndarray, params: StreamParams) -> dict[str, dict[str, float]]:
    """Median ms/frame per runner: ``encode`` (LatentStreamEncoder.encode: T, quantize, rANS; what a sender spends),
    ``recon`` (reading ``CodedFrame.recon``: T⁻¹ of the state, the exact reconstruction, computed only when asked
    for), ``decode`` (LatentStreamDecoder.decode: rANS + T⁻¹) and rANS alone each way (the frame's own payload); each
    as wall-clock time (``*_ms``) and as the process's CPU time (``*_cpu_ms``, time.process_time: on a loaded machine
    the wall clock also counts the time the scheduler gave other processes). Each frame runs through every runner in
    turn, so all see the same load."""
    encs = {k: LatentStreamEncoder(m, params) for k, m in models.items()}
    decs = {k: LatentStreamDecoder(m, params) for k, m in models.items()}
    rans = {k: LatentStreamDecoder(m, params) for k, m in models.items()}  # rANS and the integer state only (step)
    wall: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in models}
    cpu: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in models}
    clocks = (time.perf_counter, time.process_time)
    for w in latents:
        for k in models:
            marks = [[clock() for clock in clocks]]
            coded = encs[k].encode(w)
            marks.append([clock() for clock in clocks])
            recon = coded.recon
            marks.append([clock() for clock in clocks])
            decoded = decs[k].decode(coded.type, coded.payload)
            marks.append([clock() for clock in clocks])
            parts = rans[k].step(coded.type, coded.payload)
            marks.append([clock() for clock in clocks])
            assert encode_parts(parts) == coded.payload  # rANS encode alone, the same bytes
            marks.append([clock() for clock in clocks])
            assert np.array_equal(decoded, recon)  # the decoder gives the encoder's reconstruction
            for i, out in enumerate((wall, cpu)):
                t = [mark[i] for mark in marks]
                for stage, dt in zip(STAGES, (t[1] - t[0], t[2] - t[1], t[3] - t[2], t[5] - t[4], t[4] - t[3])):
                    out[k][stage].append(dt)
    return {k: {**{f"{s}_ms": 1e3 * float(np.median(v)) for s, v in wall[k].items()},
                **{f"{s}_cpu_ms": 1e3 * float(np.median(v)) for s, v in cpu[k].items()}} for k in models}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--runtime", choices=("numpy", "onnx"), default="numpy", help="where T and T⁻¹ run")
    ap.add_argument("--latents", metavar="W.npy", help="time the first --frames frames of these W+ (frames, rows, "
                    "width), e.g. a held-out clip's W+ of a face model's encoder, instead of the synthetic walk")
    ap.add_argument("--out", help="results name under benchmarks/results (default: latent_codec, latent_codec_onnx)")
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
    reference = load_latent_codec(args.model or default_latent_codec())
    eager = dataclasses.replace(reference, runner=TorchFlows(reference.flows, reference.groups))
    load_before = os.getloadavg()[0]
    timed = np.load(args.latents)[:args.frames].astype(np.float32) if args.latents else seqs["walk"]
    per_runner = stage_ms({args.runtime: model, "torch_eager": eager}, timed, base)
    speed = {**per_runner[args.runtime], "torch_eager": per_runner["torch_eager"], "threads": args.threads,
             "runtime": args.runtime, "load_average_1m": [load_before, os.getloadavg()[0]],
             "timed_on": args.latents or "synthetic walk", "timed_frames": len(timed),
             "speedup_vs_eager": {f"{s}{c}": per_runner["torch_eager"][f"{s}{c}_ms"] / per_runner[args.runtime][f"{s}{c}_ms"]
                                  for s in ("encode", "recon", "decode") for c in ("", "_cpu")}}
    name = args.out or ("latent_codec" if args.runtime == "numpy" else "latent_codec_onnx")
    path = write_result(name, {"model_id": model.model_id, "shape": [model.rows, model.width], "rows": rows, "speed_ms_per_frame": speed})
    print(f"model {model.model_id[:12]}… ({model.rows}x{model.width}); results in {path}\n")
    print("| sequence | mode | g | step | bits/frame | kbps @25 | rANS vs ideal | file vs ideal | latent MSE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sequence']} | {r['mode']} | {r['g'] or '—'} | {r['step']:g} | {r['bits_per_frame']:.0f} | {r['kbps']:.1f} | "
              f"{r['rans_over_ideal_pct']:+.2f}% | {r['file_over_ideal_pct']:+.2f}% | {r['latent_mse']:.2e} |")
    print(f"\nper frame, median, {args.threads} thread(s), load average {speed['load_average_1m'][0]:.1f} → "
          f"{speed['load_average_1m'][1]:.1f}; T and T⁻¹ in {args.runtime} vs PyTorch eager, frames in turn:\n")
    print("| runner | clock | encode (T + quantize + rANS) | recon on request (T⁻¹) | decode (rANS + T⁻¹) "
          "| rANS encode | rANS decode |")
    print("|---|---|---|---|---|---|---|")
    for name, st in ((args.runtime, speed), ("torch_eager", speed["torch_eager"])):
        for clock, c in (("wall", ""), ("CPU", "_cpu")):
            print(f"| {name} | {clock} | {st[f'encode{c}_ms']:.2f} ms | {st[f'recon{c}_ms']:.2f} ms | "
                  f"{st[f'decode{c}_ms']:.2f} ms | {st[f'rans_encode{c}_ms']:.2f} ms | {st[f'rans_decode{c}_ms']:.2f} ms |")
    print("\nspeed-up over eager: " + ", ".join(f"{k} {v:.1f}×" for k, v in speed["speedup_vs_eager"].items()))
    return 0 if all(r["decode_equals_recon"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
