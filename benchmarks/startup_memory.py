"""Start-up and memory of a decode-only process: peak RSS, time to the first decoded frame, modules imported.

    python3 benchmarks/startup_memory.py [--model BUNDLE] [--frames 10] [--repeats 3] [--runtime torch onnx]

Makes a small stream for the model (synthetic W+ latents coded with its latent codec, no face video needed), then
runs ``python3 -m sganc_stream decode IN.sgnc OUT.mp4`` in fresh processes. A probe around the CLI records when
the first decoded frame reaches the video writer (seconds since the process was started) and which modules the
process imported; peak RSS is the child's own high-water mark, read by the probe at exit
(:func:`sganc_stream.peak_memory.peak_rss_mb`: a child's ``ru_maxrss`` also holds its parent's peak from before the
fork, and a test run's parent can be large). The floor, ``python3 -c "import torch"`` measured the same way, is what
a decode process on PyTorch cannot go below; ``--runtime onnx`` (``decode --runtime onnx``, T⁻¹ and G in ONNX Runtime)
never imports torch: its graphs are exported into the cache before the measured runs. Medians of ``--repeats`` runs go to
benchmarks/results/startup_memory.json with the provenance record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Packages a decode-only process has no use for (the call, training, plots, quality metrics, other backends).
HEAVY = ("aiortc", "aiohttp", "aioice", "matplotlib", "compressai", "scipy", "dlib", "face_alignment", "sympy",
         "torch._dynamo", "pytorch_msssim", "torchvision", "ray")

PROBE = """
import json, os, sys, time
t0 = float(os.environ["SGANC_PROBE_T0"])
first = []
from sganc_stream.video import VideoWriter
write = VideoWriter.write
def probed(self, frame, *timing):
    if not first:
        first.append(time.time() - t0)
    write(self, frame, *timing)
VideoWriter.write = probed
from sganc_stream.cli import main
status = main(sys.argv[1:])
from sganc_stream.peak_memory import peak_rss_mb
json.dump({"first_frame_s": first[0] if first else None, "total_s": time.time() - t0, "peak_rss_mb": peak_rss_mb(),
           "modules": sorted(sys.modules)}, open(os.environ["SGANC_PROBE_OUT"], "w"))
sys.exit(status)
"""


FLOOR = "import torch; from sganc_stream.peak_memory import peak_rss_mb; print(peak_rss_mb())"


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """(stdout, wall seconds) of a child process; RuntimeError with its stderr's tail if it fails."""
    started = time.time()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}… exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.stdout, time.time() - started


def measure_decode(stream: Path, model: Path | None, workdir: Path, runtime: str = "torch") -> dict[str, object]:
    """One fresh ``sganc-stream decode --runtime RUNTIME`` process: peak RSS (MB), first-frame and total seconds,
    heavy modules, and whether it imported torch."""
    out = workdir / "probe.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SGANC_PROBE_OUT": str(out),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-c", PROBE, "decode", "--quiet", "--runtime", runtime, *(["--model", str(model)] if model else []),
           str(stream), str(workdir / "out.mp4")]
    env["SGANC_PROBE_T0"] = repr(time.time())
    run_measured(cmd, env)
    probe = json.loads(out.read_text())
    modules = set(probe["modules"])
    return {"peak_rss_mb": round(probe["peak_rss_mb"], 1), "first_frame_s": round(probe["first_frame_s"], 3),
            "total_s": round(probe["total_s"], 3), "heavy_modules": [m for m in HEAVY if m in modules],
            "torch_imported": "torch" in modules, "modules": len(modules)}


def make_stream(model: Path | None, frames: int, path: Path) -> None:
    """A stream the model decodes: synthetic W+ latents through its latent codec (the decoder needs nothing else)."""
    from sganc_stream.assets import default_face_model
    from sganc_stream.fileio import write_bytes_atomic
    from sganc_stream.latent.codec import StreamParams
    from sganc_stream.latent.sequence import encode_sequence
    from sganc_stream.latent.synthetic import synthetic_latents
    from sganc_stream.pipeline import load_face_model

    face = load_face_model(model or default_face_model())
    latents = synthetic_latents("smooth", frames, face.codec.rows, face.codec.width, seed=0)
    write_bytes_atomic(path, encode_sequence(face.codec, latents, StreamParams(), 25.0).data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded one)")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runtime", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"],
                   help="decode runtimes to measure (default both)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sganc-startup-") as tmp:
        work = Path(tmp)
        stream = work / "small.sgnc"
        make_stream(args.model, args.frames, stream)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if "onnx" in args.runtime:  # the graphs are exported (with torch) once, before the measured runs
            from sganc_stream.assets import default_face_model
            from sganc_stream.onnx_runtime import load_onnx_face_model

            load_onnx_face_model(args.model or default_face_model())
        floor = [run_measured([sys.executable, "-c", FLOOR], env) for _ in range(args.repeats)]
        # runtimes alternate, so that both see the same load on a shared machine
        runs = {r: [] for r in args.runtime}
        for _ in range(args.repeats):
            for r in args.runtime:
                runs[r].append(measure_decode(stream, args.model, work, r))
    from benchmarks.common import write_result

    def summary(rs: list[dict[str, object]]) -> dict[str, object]:
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        return {"peak_rss_mb": med("peak_rss_mb"), "first_frame_s": med("first_frame_s"), "total_s": med("total_s"),
                "heavy_modules": rs[0]["heavy_modules"], "torch_imported": rs[0]["torch_imported"],
                "modules": rs[0]["modules"]}

    result = {
        "settings": {"model": str(args.model or "embedded default"), "frames": args.frames, "repeats": args.repeats,
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"), "runtimes": args.runtime},
        "decode": {r: summary(rs) for r, rs in runs.items()},
        "import_torch_floor": {"peak_rss_mb": round(statistics.median(float(f[0]) for f in floor), 1),
                               "seconds": round(statistics.median(f[1] for f in floor), 3)},
        "runs": runs,
    }
    path = write_result("startup_memory", result)
    f = result["import_torch_floor"]
    for r, d in result["decode"].items():
        print(f"decode --runtime {r}: peak RSS {d['peak_rss_mb']} MB, first frame after {d['first_frame_s']} s, "
              f"total {d['total_s']} s; torch imported: {d['torch_imported']}; heavy modules imported: "
              f"{d['heavy_modules'] or 'none'}")
    print(f"floor (import torch): {f['peak_rss_mb']} MB, {f['seconds']} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
