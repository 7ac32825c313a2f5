"""Per-stage CPU time of E, T, T⁻¹ and G under each runtime: PyTorch eager, TorchScript, torch.compile, ONNX Runtime,
and for T and T⁻¹ the latent codec's default numpy runner (sganc_stream.latent.numpy_flow, stage groups batched).

    OMP_NUM_THREADS=1 python3 benchmarks/runtime_speed.py [--model BUNDLE] [--repeats 200] [--compile]

The embedded face model by default, batch 1, one thread everywhere (torch intra-op threads 1; ONNX Runtime
intra- and inter-op threads 1), real weights, inputs from the model's own domain (E: a decoded face; T: E's W+;
T⁻¹: T of it rounded at the middle step preset; G: that W+). E is what the call runs: the encoder with its uint8 input
conversion (``Project``; with an identity-conditioned encoder, dlib's face descriptor included). ``E+G`` is E then G
on one frame, as one peer of a call runs them (its own E, the other side's G): issue 12's speed aim is E + G ≤ 40 ms
on one core. ``eager_bf16`` is eager under CPU bfloat16 autocast (E, G and E+G only: the flow stays float32).
``onnxruntime_int8`` is E's graph quantized to int8 as the call's default builds it (:mod:`sganc_stream.onnx_quantize`),
alone and followed by G's float32 graph (E and E+G only). ``T_fused`` / ``T_inv_fused`` are the flow with its coupling layers fused across the stage
groups (:class:`FusedFlowStack`, below: the groups as a batch dimension, each coupling's scale and shift MLPs as one),
a candidate measured here, with its gap from the unfused flow. Each stage is timed ``--repeats`` times after a warm-up
and the median reported, with the largest difference from eager (max |a − b|, and for W+ the SPEC §7 measure
max |a − b| / (1 + |b|); images in uint8 levels). TorchScript is ``torch.jit.trace`` + ``freeze``; ``torch.compile``
(inductor, C++ code generation; minutes on a loaded machine) only with ``--compile``. Writes
benchmarks/results/runtime_speed.json with the provenance record and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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
from sganc_stream.latent.flow import FlowStack  # noqa: E402
from sganc_stream.latent.flow import RealNVP  # noqa: E402
from sganc_stream.models.onnx_export import Project, Render, to_onnx  # noqa: E402
from torch import nn  # noqa: E402
from sganc_stream.latent.model import LatentCodecModel  # noqa: E402
from sganc_stream.onnx_quantize import quantize_encoder_from_prior  # noqa: E402
from sganc_stream.onnx_runtime import session_options  # noqa: E402
from sganc_stream.pipeline import load_face_model  # noqa: E402


class FusedFlowStack(nn.Module):
    """T (or T⁻¹ with ``inverse``) over a whole W+ frame ``(rows, width)`` float32, all stage groups at once: the
    candidate fusion of the flow's couplings this benchmark measures against ``FlowStack``.

    ``FlowStack`` runs one RealNVP per stage group, 3 groups × 13 couplings × 2 MLPs × 3 linear layers for the default
    model (234 tiny products on 3–4 rows each). Here the groups are a batch dimension (rows padded to the largest
    group) and each coupling's two MLPs are one (first layers side by side, second layers block-diagonal): 4 batched
    products per coupling for all groups (52 in all). Same weights and operations per value; sums may be blocked
    differently, so outputs agree with ``FlowStack``'s to float rounding (``fused_vs_unfused_gap``).

    ``flows`` and ``groups`` as :class:`~sganc_stream.latent.flow.FlowStack`'s: one :class:`RealNVP` per group of rows
    ``(start, stop)``; every flow must have the same width, hidden size and number of couplings (ValueError)."""

    def __init__(self, flows: list[RealNVP], groups: list[tuple[int, int]], inverse: bool) -> None:
        super().__init__()
        if len(flows) != len(groups) or not flows:
            raise ValueError(f"{len(flows)} flows for {len(groups)} groups")
        shapes = {(f.width, len(f.layers), f.layers[0].scale[0].out_features) for f in flows}
        if len(shapes) != 1:
            raise ValueError(f"flows of different shapes cannot be fused: {sorted(shapes)}")
        self.inverse = inverse
        self.parities = [layer.parity for layer in flows[0].layers]
        sizes = [b - a for a, b in groups]
        pad = max(sizes)
        # padded layout: group g holds rows groups[g] then copies of its last row; ``gather`` builds it, ``scatter``
        # picks each original row back out of it
        gather = [a + min(i, b - a - 1) for a, b in groups for i in range(pad)]
        scatter = [g * pad + i for g, (a, b) in enumerate(groups) for i in range(b - a)]
        self.register_buffer("gather", torch.tensor(gather, dtype=torch.long), persistent=False)
        self.register_buffer("scatter", torch.tensor(scatter, dtype=torch.long), persistent=False)
        self.shape = (len(groups), pad, flows[0].width)
        hidden = flows[0].layers[0].scale[0].out_features
        w1, b1, w2, b2, w3s, b3s, w3t, b3t = ([] for _ in range(8))
        for k in range(len(self.parities)):
            layers = [f.layers[k] for f in flows]
            s, t = [lay.scale for lay in layers], [lay.shift for lay in layers]
            w1.append(torch.stack([torch.cat([si[0].weight.T, ti[0].weight.T], 1) for si, ti in zip(s, t)]))
            b1.append(torch.stack([torch.cat([si[0].bias, ti[0].bias])[None] for si, ti in zip(s, t)]))
            w2.append(torch.stack([torch.block_diag(si[2].weight.T, ti[2].weight.T) for si, ti in zip(s, t)]))
            b2.append(torch.stack([torch.cat([si[2].bias, ti[2].bias])[None] for si, ti in zip(s, t)]))
            w3s.append(torch.stack([si[4].weight.T for si in s]))
            b3s.append(torch.stack([si[4].bias[None] for si in s]))
            w3t.append(torch.stack([ti[4].weight.T for ti in t]))
            b3t.append(torch.stack([ti[4].bias[None] for ti in t]))
        self.hidden = hidden
        self.params = nn.ParameterList(nn.Parameter(torch.stack(p).detach().clone(), requires_grad=False)
                                       for p in (w1, b1, w2, b2, w3s, b3s, w3t, b3t))

    def _scale_shift(self, k: int, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w1, b1, w2, b2, w3s, b3s, w3t, b3t = (p[k] for p in self.params)
        h = nn.functional.leaky_relu(torch.matmul(a, w1) + b1, 0.2)
        h = nn.functional.leaky_relu(torch.matmul(h, w2) + b2, 0.2)
        scale = torch.tanh(torch.matmul(h[..., :self.hidden], w3s) + b3s)
        return scale, torch.matmul(h[..., self.hidden:], w3t) + b3t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = x.index_select(0, self.gather).reshape(self.shape)
        even, odd = xp[..., 0::2], xp[..., 1::2]
        order = range(len(self.parities) - 1, -1, -1) if self.inverse else range(len(self.parities))
        for k in order:
            a, b = (odd, even) if self.parities[k] else (even, odd)
            scale, shift = self._scale_shift(k, a)
            b = (b - shift) * torch.exp(-scale) if self.inverse else b * torch.exp(scale) + shift
            if self.parities[k]:
                even = b
            else:
                odd = b
        g, pad, width = self.shape
        if even.shape[-1] == odd.shape[-1]:
            y = torch.stack((even, odd), dim=-1).reshape(g * pad, width)
        else:
            y = torch.empty(g, pad, width, dtype=x.dtype)
            y[..., 0::2], y[..., 1::2] = even, odd
            y = y.reshape(g * pad, width)
        return y.index_select(0, self.scatter)


class EThenG(torch.nn.Module):
    """E then G on one frame: uint8 crop ``(1, S, S, 3)`` → uint8 image ``(1, size, size, 3)``."""

    def __init__(self, project: torch.nn.Module, render: torch.nn.Module) -> None:
        super().__init__()
        self.project, self.render = project, render

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.render(self.project(x))


def median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per call of each function, wall clock (``<name>_ms``) and CPU time of the calling thread
    (``<name>_cpu_ms``); the calls alternate (round robin), so that on a shared machine every runtime sees the same
    load. Every runtime here computes on the calling thread (one intra-op thread), so its CPU time leaves out the
    time the thread waited for a core: on a loaded machine the wall figures of millisecond calls are mostly
    scheduling (time slices of several ms), the CPU figures are the work."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.thread_time() - c0)
    return {**{f"{k}_ms": 1e3 * statistics.median(v) for k, v in wall.items()},
            **{f"{k}_cpu_ms": 1e3 * statistics.median(v) for k, v in cpu.items()}}


def cell(row: dict[str, object], runtime: str) -> str:
    """``CPU ms (wall ms)`` of one runtime in a result row; ``—`` where the stage was not run in it."""
    if f"{runtime}_cpu_ms" not in row:
        return "—"
    return f"{row[f'{runtime}_cpu_ms']:.2f} ({row[f'{runtime}_ms']:.1f})"


def gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """max |a − b| and max |a − b| / (1 + |b|) (SPEC §7's measure), b the eager reference."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(d.max()), "max_rel": float((d / (1 + np.abs(b.astype(np.float64)))).max())}


def int8_encoder(graph: bytes, codec: LatentCodecModel, render: torch.nn.Module, side: int) -> Callable[[np.ndarray], np.ndarray]:
    """E's float32 ONNX graph ``graph`` quantized to int8 as the call quantizes it (calibrated on faces ``render``
    makes from the codec's prior), as a function of a uint8 crop ``(1, side, side, 3)``."""
    def draw(w: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return render(torch.from_numpy(w)).numpy()

    with tempfile.TemporaryDirectory(prefix="runtime-speed-") as work:
        (Path(work) / "e.onnx").write_bytes(graph)
        quantize_encoder_from_prior(Path(work) / "e.onnx", Path(work) / "e8.onnx", codec, draw, side)
        sess = ort.InferenceSession(str(Path(work) / "e8.onnx"), session_options(), providers=["CPUExecutionProvider"])
    return lambda xn: sess.run(None, {"x": xn})[0]


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
        project = Project(face.encoder, int(face.config["encoder"]["input_size"]))
        x_e = torch.from_numpy(crop)  # the model's own size is E's input side: no resize
        wplus = project(x_e)
        y = FlowStack(codec.flows, codec.groups, inverse=False)(wplus[0])
        state_f = torch.round(y / step) * step
    stages: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {
        "E": (project, x_e),
        "T": (FlowStack(codec.flows, codec.groups, inverse=False), wplus[0].clone()),
        "T_fused": (FusedFlowStack(codec.flows, codec.groups, inverse=False), wplus[0].clone()),
        "T_inv": (FlowStack(codec.flows, codec.groups, inverse=True), state_f.clone()),
        "T_inv_fused": (FusedFlowStack(codec.flows, codec.groups, inverse=True), state_f.clone()),
        "G": (Render(face.generator), wplus.clone()),
        "E+G": (EThenG(project, Render(face.generator)), x_e),
    }
    unfused: dict[str, np.ndarray] = {}
    graphs: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[np.ndarray], np.ndarray]]] = {}
    results: dict[str, dict[str, object]] = {}
    for name, (module, x) in stages.items():
        module.eval()
        row: dict[str, object] = {"input_shape": list(x.shape)}
        fns: dict[str, Callable[[], object]] = {}
        with torch.inference_mode():
            ref = module(x).numpy()
        if name.endswith("_fused"):
            row["fused_vs_unfused_gap"] = gap(ref, unfused[name.removesuffix("_fused")])
        unfused[name] = ref
        fns["eager"] = torch.inference_mode()(lambda m=module, x=x: m(x))
        if name in ("E", "G", "E+G"):
            def bf16(m: torch.nn.Module = module, x: torch.Tensor = x) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return m(x)
            row["eager_bf16_gap"] = gap(bf16().float().numpy(), ref)
            fns["eager_bf16"] = bf16
        if name == "E+G":  # E's graph, then G's, as the call runs them (one traced or exported graph each)
            traced = lambda x, e=graphs["E"][0], g=graphs["G"][0]: g(e(x))  # noqa: E731
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(module, (x,)))
                traced(x), traced(x)  # the profiling executor specialises on the first calls
        with torch.no_grad():
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
        xn = x.numpy()
        if name == "E+G":
            run_ort = lambda xn, e=graphs["E"][1], g=graphs["G"][1]: g(e(xn))  # noqa: E731
        else:
            t0 = time.perf_counter()
            data = to_onnx(module, x, "x", "y")
            row["onnx_export_s"] = time.perf_counter() - t0
            row["onnx_bytes"] = len(data)
            sess = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
            run_ort = lambda xn, s=sess: s.run(None, {"x": xn})[0]  # noqa: E731
        graphs[name] = (traced, run_ort)
        row["onnxruntime_gap"] = gap(run_ort(xn), ref)
        fns["onnxruntime"] = lambda r=run_ort, xn=xn: r(xn)
        if name == "E":  # E's int8 graph as the call builds it (sganc_stream.onnx_quantize), G stays float32
            run_int8 = int8_encoder(data, codec, Render(face.generator), int(face.config["encoder"]["input_size"]))
        if name in ("E", "E+G"):
            run_q = run_int8 if name == "E" else (lambda xn, e=run_int8, g=graphs["G"][1]: g(e(xn)))  # noqa: E731
            row["onnxruntime_int8_gap"] = gap(run_q(xn), ref)
            fns["onnxruntime_int8"] = lambda r=run_q, xn=xn: r(xn)
        if name in ("T", "T_inv"):  # the latent codec's default runner (numpy, stage groups batched)
            run = codec._runner().inverse if name == "T_inv" else codec._runner().forward
            row["numpy_gap"] = gap(run(xn), ref)
            fns["numpy"] = lambda run=run, xn=xn: run(xn)
        row.update(median_ms(fns, args.repeats))
        results[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_ms")), flush=True)
    runtimes = ["eager", "eager_bf16", "torchscript", *(["compile"] if args.compile else []), "onnxruntime",
                "onnxruntime_int8", "numpy"]
    for row in results.values():
        row["fastest"] = min((r for r in runtimes if f"{r}_cpu_ms" in row), key=lambda r: row[f"{r}_cpu_ms"])
    path = write_result("runtime_speed", {
        "settings": {"model": str(args.model or "embedded default"), "batch": 1, "threads": 1,
                     "repeats": args.repeats, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "stages": results})
    print(f"\nCPU ms of the calling thread (wall ms), medians; load average {os.getloadavg()[0]:.1f}")
    print(f"\n| stage | input | {' | '.join(f'{r} ms' for r in runtimes)} | fastest | ORT max gap vs eager |")
    print(f"|---|---|{'---|' * len(runtimes)}---|---|")
    for name, row in results.items():
        g = row["onnxruntime_gap"]
        shown = f"{g['max_abs']:.0f} levels" if name in ("G", "E+G") else f"{g['max_rel']:.1e} (rel)"
        print(f"| {name} | {'x'.join(map(str, row['input_shape']))} | "
              f"{' | '.join(cell(row, r) for r in runtimes)} | {row['fastest']} | {shown} |")
    print(f"\n-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
