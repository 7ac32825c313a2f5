"""What Ray costs: `transcode-dataset` on one small tree with the local engine and with Ray at 1, 2, ... workers.

    python benchmarks/engine_overhead.py [--clips FILE ...] [--max-frames 8] [--workers 1 2] [--reps 2] [--model B]

Runs are interleaved (local, ray×1, ray×2, local, ...) so a loaded machine slows them alike; each starts Ray afresh,
as the CLI does. Besides the whole runs, it times Ray's fixed start (``ray.init`` + workers loading the model, until
the first no-op result) and the round trip of one item through a worker (a no-op map of ``--round-trips`` items).
Every Ray run's .sgnc files are compared with the local run's (1 torch thread in both). Writes
benchmarks/results/engine_overhead.json with command, commit and machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.dataset import transcode_dataset
from sganc_stream.engine import EngineOptions, import_ray, open_pool
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import FaceModel, TranscodeOptions, load_face_model

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
DEFAULT_CLIPS = [f"dreamtalk_mead/M030_front_{c}.mp4" for c in
                 ("angry_level3_001", "happy_level3_001", "neutral_level1_001", "sad_level3_001")]


def _same(model: FaceModel) -> FaceModel:
    return model


def _noop(model: FaceModel, item: int) -> int:
    return item


def ray_fixed_costs(model: FaceModel, workers: int, round_trips: int) -> dict[str, float]:
    """Seconds to start Ray and to have every worker loaded; milliseconds per no-op item through the pool."""
    ray = import_ray()
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    init = time.perf_counter() - t0
    try:
        with open_pool(EngineOptions("ray", workers=workers), model, _same) as pool:
            list(pool.map(_noop, range(workers)))
            ready = time.perf_counter() - t0 - init
            t1 = time.perf_counter()
            list(pool.map(_noop, range(round_trips)))
            per_item = (time.perf_counter() - t1) / round_trips
    finally:
        ray.shutdown()
    return {"ray_init_s": init, "workers_ready_s": ready, "start_s": init + ready, "round_trip_ms": 1000 * per_item}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", help=f"clip files (default: 4 MEAD clips of {SHARED_CLIPS})")
    ap.add_argument("--max-frames", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--round-trips", type=int, default=200)
    ap.add_argument("--model", help="face model bundle (default: the embedded face model)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the workers' count, so the bytes must match
    model = load_face_model(args.model or default_face_model())
    clips = [Path(c) for c in args.clips] if args.clips else [SHARED_CLIPS / c for c in DEFAULT_CLIPS]
    options = TranscodeOptions(params=StreamParams("open", 10, len(model.codec.steps) // 2, 0),
                               max_frames=args.max_frames, quality=True, progress=False)
    engines = {"local": EngineOptions(), **{f"ray x{w}": EngineOptions("ray", workers=w) for w in args.workers}}
    walls: dict[str, list[float]] = {name: [] for name in engines}
    loads: dict[str, list[float]] = {name: [] for name in engines}  # 1-minute load average after each run
    same_bytes: dict[str, bool] = {}
    frames = 0
    with tempfile.TemporaryDirectory(prefix="engine-overhead-") as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        for i, clip in enumerate(clips):
            (root / f"{i:02d}_{clip.name}").symlink_to(clip.resolve())
        for rep in range(args.reps):
            for name, engine in engines.items():
                out = Path(tmp) / f"{name.replace(' ', '')}_{rep}"
                t0 = time.perf_counter()
                summary = transcode_dataset(model, root, out, "folder", options, engine=engine)
                walls[name].append(time.perf_counter() - t0)
                loads[name].append(os.getloadavg()[0])
                print(f"rep {rep} {name}: {walls[name][-1]:.1f} s, {summary['done']}/{summary['clips']} clips, "
                      f"load average {loads[name][-1]:.1f}")
                frames = summary["frames"]
                if name != "local":
                    local = Path(tmp) / f"local_{rep}"
                    same = all(p.read_bytes() == (local / p.relative_to(out)).read_bytes() for p in out.rglob("*.sgnc"))
                    same_bytes[name] = same_bytes.get(name, True) and same and summary["done"] == len(clips)
        fixed = {f"ray x{w}": ray_fixed_costs(model, w, args.round_trips) for w in args.workers}
    local = statistics.median(walls["local"])
    rows: list[dict[str, Any]] = []
    for name, ws in walls.items():
        wall = statistics.median(ws)
        row = {"engine": name, "wall_s": ws, "load_average_1m": loads[name], "median_wall_s": wall,
               "vs_local": wall / local,
               "per_clip_s": wall / len(clips)}
        if name != "local":
            f = fixed[name]
            row.update(**f, same_sgnc_bytes=same_bytes[name], vs_local_without_start=(wall - f["start_s"]) / local)
        rows.append(row)
        print(f"{name}: median {wall:.1f} s = {wall / local:.2f}× local" +
              (f"; Ray start {row['start_s']:.1f} s (init {row['ray_init_s']:.1f} s), {row['round_trip_ms']:.1f} ms "
               f"per item, same bytes: {row['same_sgnc_bytes']}" if name != "local" else ""))
    write_result("engine_overhead", {"clips": [str(c) for c in clips], "max_frames": args.max_frames,
                                     "frames": frames, "model_id": model.model_id, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
