"""What quality mode (`transcode --refine STEPS`) buys in quality and costs in bits and time.

    python3 benchmarks/refine_quality.py [--model BUNDLE] [--frames 25] [--clips PATH ...]

Transcodes held-out MEAD clips (M030, a person the embedded model never saw) at g = 10, the middle Δ preset, one
thread, once per configuration: E's W+ as is (steps 0), then refined with several step counts and temporal weights.
Quality is against the aligned input at the report's size, identity on every frame; encode time is the
transcode report's (alignment, E, refinement, coding; not the quality measurements). Outputs
benchmarks/results/refine_quality.json (with the provenance record) and a Markdown table on stdout. Note that the
identity loss of the refinement is dlib's network, the same one that measures identity here: its figure flatters
the refinement; MS-SSIM and PSNR do not share that bias.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from sganc_stream.assets import default_face_model  # noqa: E402
from sganc_stream.latent.codec import StreamParams  # noqa: E402
from sganc_stream.pipeline import TranscodeOptions, load_face_model, transcode_file  # noqa: E402
from sganc_stream.refine import RefineOptions  # noqa: E402
from sganc_stream.threads import set_threads  # noqa: E402

CLIPS = [ROOT.parent / "shared" / "data" / "clips" / "dreamtalk_mead" / name
         for name in ("M030_front_neutral_level1_001.mp4", "M030_front_happy_level3_001.mp4")]
CONFIGS = [RefineOptions(0), RefineOptions(10), RefineOptions(25), RefineOptions(25, temporal_weight=10.0)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded one)")
    p.add_argument("--frames", type=int, default=25, help="frames per clip (default 25)")
    p.add_argument("--clips", type=Path, nargs="+", default=CLIPS)
    args = p.parse_args(argv)
    set_threads(1)
    model = load_face_model(args.model or default_face_model())
    middle = len(model.codec.steps) // 2
    base = TranscodeOptions(params=StreamParams("open", 10, middle, 0), quality=True, identity_every=1,
                            max_frames=args.frames, progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sganc-refine-") as tmp:
        for config in CONFIGS:
            reports = [transcode_file(model, clip, Path(tmp) / "out.sgnc", replace(base, refine=config))
                       for clip in args.clips]
            frames = sum(r["frames"] for r in reports)
            quality = [r["quality"]["vs_aligned"] for r in reports]
            rows.append({"steps": config.steps, "temporal_weight": config.temporal_weight,
                         "identity_weight": config.identity_weight, "lr": config.lr, "frames": frames,
                         "kbps": statistics.mean(r["kbps"] for r in reports),
                         "identity": statistics.mean(q["identity_distance"] for q in quality),
                         "ms_ssim": statistics.mean(q["ms_ssim"] for q in quality),
                         "psnr": statistics.mean(q["psnr"] for q in quality),
                         "encode_s_per_frame": sum(r["frames"] / r["speed"]["encode_fps"] for r in reports) / frames})
            print(f"steps {config.steps} temporal {config.temporal_weight:g}: {rows[-1]}", file=sys.stderr)
    result = {"settings": {"model": str(args.model or "embedded default"), "clips": [str(c) for c in args.clips],
                           "frames_per_clip": args.frames, "g": 10, "step_index": middle, "threads": 1},
              "rows": rows}
    path = write_result("refine_quality", result)
    print("| steps | temporal weight | kbit/s | identity (dlib) | MS-SSIM | PSNR dB | encode s/frame |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['steps']} | {r['temporal_weight']:g} | {r['kbps']:.1f} | {r['identity']:.3f} | "
              f"{r['ms_ssim']:.4f} | {r['psnr']:.2f} | {r['encode_s_per_frame']:.2f} |")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
