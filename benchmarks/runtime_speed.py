"""Per-stage CPU time of E, T, T⁻¹ and G under each runtime: PyTorch eager, TorchScript, torch.compile, ONNX Runtime,
and for T and T⁻¹ the latent codec's default numpy runner (sganc_stream.latent.numpy_flow, stage groups batched).

    OMP_NUM_THREADS=1 python3 benchmarks/runtime_speed.py [--model BUNDLE] [--repeats 200] [--compile]

The embedded face model by default, batch 1, one thread everywhere (torch intra-op threads 1; ONNX Runtime
intra- and inter-op threads 1), real weights, inputs from the model's own domain (E: a decoded face; T: E's W+;
T⁻¹: T of it rounded at the middle step preset; G: that W+). Each stage is timed ``--repeats`` times after a warm-up
and the median reported, with the largest difference from eager (max |a − b|, and for W+ the SPEC §7 measure
max |a − b| / (1 + |b|); images in uint8 levels). TorchScript is ``torch.jit.trace`` + ``freeze``; ``torch.compile``
(inductor, C++ code generation; minutes on a loaded machine) only with ``--compile``. Writes
benchmarks/results/runtime_speed.json with the provenance record and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from sganc_stream.assets import default_face_model  # noqa: E402
from sganc_stream.models.encoders import images_to_tensor  # noqa: E402
from sganc_stream.latent.flow import FlowStack  # noqa: E402
from sganc_stream.models.onnx_export import Render, to_onnx  # noqa: E402
from sganc_stream.onnx_runtime import session_options  # noqa: E402
from sganc_stream.pipeline import load_face_model  # noqa: E402


def median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per call of each function, wall clock (``{name}``) and process CPU time (``{name}_cpu``: on a loaded
    machine the wall clock also counts other processes' turns); the calls alternate (round robin), so that on a
    shared machine every runtime sees the same load and the ratios hold even when the absolute figures drift."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns} | {f"{k}_cpu": [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - t0)
            times[f"{k}_cpu"].append(time.process_time() - c0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """max |a − b| and max |a − b| / (1 + |b|) (SPEC §7's measure), b the eager reference."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(d.max()), "max_rel": float((d / (1 + np.abs(b.astype(np.float64)))).max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded one)")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (inductor)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    face = load_face_model(args.model or default_face_model())
    codec = face.codec
    step = codec.steps[len(codec.steps) // 2]
    with torch.inference_mode():
        w0 = torch.from_numpy(np.ascontiguousarray(
            np.full((1, codec.rows, codec.width), 0, np.float32) + face.encoder.latent_avg.numpy()[None]))
        crop = Render(face.generator)(w0 + 0.3 * torch.randn_like(w0)).numpy()  # a face the model can make
        side = int(face.config["encoder"]["input_size"])
        x_e = torch.nn.functional.interpolate(images_to_tensor(crop), size=(side, side), mode="bilinear",
                                              align_corners=False, antialias=True)
        wplus = face.encoder(x_e)
        y = FlowStack(codec.flows, codec.groups, inverse=False)(wplus[0])
        state_f = torch.round(y / step) * step
    stages: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {
        "E": (face.encoder, x_e),
        "T": (FlowStack(codec.flows, codec.groups, inverse=False), wplus[0].clone()),
        "T_inv": (FlowStack(codec.flows, codec.groups, inverse=True), state_f.clone()),
        "G": (Render(face.generator), wplus.clone()),
    }
    results: dict[str, dict[str, object]] = {}
    for name, (module, x) in stages.items():
        module.eval()
        row: dict[str, object] = {"input_shape": list(x.shape)}
        fns: dict[str, Callable[[], object]] = {}
        with torch.inference_mode():
            ref = module(x).numpy()
        fns["eager"] = torch.inference_mode()(lambda m=module, x=x: m(x))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(module, (x,)))
            traced(x), traced(x)  # the profiling executor specialises on the first calls
            row["torchscript_gap"] = gap(traced(x).numpy(), ref)
        fns["torchscript"] = torch.no_grad()(lambda t=traced, x=x: t(x))
        if args.compile:
            compiled = torch.compile(module)
            with torch.inference_mode():
                t0 = time.perf_counter()
                compiled(x)
                row["compile_s"] = time.perf_counter() - t0
                row["compile_gap"] = gap(compiled(x).numpy(), ref)
            fns["compile"] = torch.inference_mode()(lambda c=compiled, x=x: c(x))
        t0 = time.perf_counter()
        data = to_onnx(module, x, "x", "y")
        row["onnx_export_s"] = time.perf_counter() - t0
        row["onnx_bytes"] = len(data)
        sess = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        xn = x.numpy()
        row["onnxruntime_gap"] = gap(sess.run(None, {"x": xn})[0], ref)
        fns["onnxruntime"] = lambda s=sess, xn=xn: s.run(None, {"x": xn})
        if name in ("T", "T_inv"):
            run = codec._runner().inverse if name == "T_inv" else codec._runner().forward
            row["numpy_gap"] = gap(run(xn), ref)
            fns["numpy"] = lambda run=run, xn=xn: run(xn)
        row.update({f"{k}_ms": v for k, v in median_ms(fns, args.repeats).items()})
        results[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_ms")), flush=True)
    runtimes = ["eager", "torchscript", *(["compile"] if args.compile else []), "onnxruntime", "numpy"]
    for row in results.values():
        row["fastest"] = min((r for r in runtimes if f"{r}_cpu_ms" in row), key=lambda r: row[f"{r}_cpu_ms"])
    path = write_result("runtime_speed", {
        "settings": {"model": str(args.model or "embedded default"), "batch": 1, "threads": 1,
                     "repeats": args.repeats, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "stages": results})
    print(f"\n| stage | input | {' | '.join(f'{r} CPU ms' for r in runtimes)} | fastest | ORT max gap vs eager |")
    print(f"|---|---|{'---|' * len(runtimes)}---|---|")
    for name, row in results.items():
        g = row["onnxruntime_gap"]
        shown = f"{g['max_abs']:.0f} levels" if name == "G" else f"{g['max_rel']:.1e} (rel)"
        print(f"| {name} | {'x'.join(map(str, row['input_shape']))} | "
              f"{' | '.join(format(row[f'{r}_cpu_ms'], '.3f') if f'{r}_cpu_ms' in row else '—' for r in runtimes)} | "
              f"{row['fastest']} | {shown} |")
    print(f"\n-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
