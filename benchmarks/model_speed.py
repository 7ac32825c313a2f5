"""Frames/s of the StyleGAN2 generator and the W+ encoders (benchmark, not a test).

CPU: eager float32. CUDA (when available): eager float32 / float16 and CUDA-graph float32 / float16,
each at batch 1 and batched. Weights are random (speed does not depend on them). Writes a JSON file
with the command line, git commit and machine, and prints a Markdown table.

    python3 benchmarks/model_speed.py --device cpu --sizes 64 128 256 1024 --batches 1 4
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from sganc_stream.models import Encoder4Editing, FastEncoder, FastEncoderConfig, Generator, GeneratorConfig, GradualStyleEncoder
from sganc_stream.models.runtime import FastRunner

from common import provenance

ROOT = Path(__file__).resolve().parents[1]


def time_calls(fn, x: torch.Tensor, repeats: int, warmup: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def models(args: argparse.Namespace):
    """(name, resolution, module factory, per-sample input shape)."""
    for size in args.sizes:
        cfg = GeneratorConfig(size=size)
        yield "G", size, (lambda c=cfg: Generator(c)), (cfg.n_latent, 512)
    for name in args.encoders:
        if name == "fast":
            for res in args.fast_sizes:
                yield "E-fast", res, (lambda r=res: FastEncoder(FastEncoderConfig(input_size=r))), (3, res, res)
        else:
            cls = {"psp": GradualStyleEncoder, "e4e": Encoder4Editing}[name]
            yield f"E-{name}", 256, cls, (3, 256, 256)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 1024])
    parser.add_argument("--encoders", nargs="*", default=["psp", "fast"], choices=["psp", "e4e", "fast"])
    parser.add_argument("--fast-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-cpu-seconds", type=float, default=120.0, help="skip a CPU case whose first call says it would take longer")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    cuda = device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    modes = [("eager", torch.float32, False), ("eager-fp16", torch.float16, False),
             ("graph", torch.float32, True), ("graph-fp16", torch.float16, True)] if cuda else [("eager", torch.float32, False)]
    results = []
    for name, res, factory, shape in models(args):
        base = factory().eval().requires_grad_(False)
        for batch in args.batches:
            x = torch.randn(batch, *shape)
            for mode, dtype, graph in modes:
                runner = FastRunner(copy.deepcopy(base), tuple(x.shape), device=device, dtype=dtype, cuda_graph=graph)
                xd = x.to(device)
                if not cuda:  # one probe call decides whether the case fits the time budget
                    t = time.perf_counter()
                    runner(xd)
                    probe = time.perf_counter() - t
                    if probe * (args.repeats + args.warmup) > args.max_cpu_seconds:
                        print(f"skip {name}{res} b{batch} {mode}: ~{probe:.1f} s/call", file=sys.stderr)
                        continue
                times = time_calls(runner, xd, args.repeats, args.warmup, cuda)
                med = statistics.median(times)
                row = {"model": name, "resolution": res, "batch": batch, "device": device, "mode": mode,
                       "median_ms_per_call": round(med * 1e3, 3), "ms_per_frame": round(med * 1e3 / batch, 3),
                       "frames_per_s": round(batch / med, 2), "min_ms_per_call": round(min(times) * 1e3, 3),
                       "repeats": len(times)}
                results.append(row)
                print(f"| {name} | {res} | {batch} | {device} {mode} | {row['ms_per_frame']:.1f} | {row['frames_per_s']:.1f} "
                      f"| {row['min_ms_per_call'] / batch:.1f} |", flush=True)
                del runner
        del base
    record = {**provenance(), "load_average_1min_at_start": round(load_before, 2), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
