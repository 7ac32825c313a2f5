"""Memory and CPU time of the documented official-checkpoint path at 1024 px (benchmark, not a test).

Builds a stand-in ``psp_ffhq_encode.pt`` of exactly the official layout (792 state-dict keys + latent_avg, 300 M
values, the seeded random weights of ../shared/reference's recipe: speed and memory do not depend on the values, the
faces it produces are noise), then runs the commands README "Use the official checkpoints" documents, each in its
own process, and records every command's peak resident memory (``ru_maxrss``) and CPU time (user + system, from
``wait4``) plus the per-frame figures of the transcode report:

    weights bundle → prepare-faces --size 256 → complete-bundle → transcode (8 frames) → decode → inspect

    python3 benchmarks/official_model.py --threads 1 --frames 8 [--stand-in /tmp/psp_ffhq_encode.pt]

Writes benchmarks/results/official_model.json (command, commit, machine) and prints a Markdown table.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sganc_stream, like the `-m sganc_stream` children (cwd = ROOT)

from common import write_result  # noqa: E402
SHARED = ROOT.parent / "shared"
TRAIN_CLIPS = ("dreamtalk_mead/M030_front_angry_level3_001.mp4", "dreamtalk_mead/M030_front_happy_level3_001.mp4")
TEST_CLIP = "dreamtalk_mead/M030_front_neutral_level1_001.mp4"


def measured(args: list[str], threads: int) -> dict:
    """One `sganc-stream` command in a child process: wall and CPU seconds and peak RSS of that child alone."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sganc_stream", *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"sganc-stream {' '.join(args)} failed ({code}): {errors.strip().splitlines()[-1:]}")
    return {"command": "sganc-stream " + " ".join(args), "exit": code, "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stdout": text.strip()[-600:]}


def component_times(bundle: Path, aligned: Path, threads: int) -> dict[str, float]:
    """Median CPU ms per frame (``time.process_time``, batch 1) of the encoder on the transcode's aligned 256 px
    crops, of the generator at 1024 on their W+, and of the latent coding (T, rANS, T⁻¹) of those W+."""
    from sganc_stream.latent.codec import LatentStreamDecoder, LatentStreamEncoder, StreamParams
    from sganc_stream.pipeline import load_face_model
    from sganc_stream.video import read_frames

    torch.set_num_threads(threads)
    model = load_face_model(bundle)
    crops = read_frames(aligned)
    params = StreamParams()
    enc, dec = LatentStreamEncoder(model.codec, params), LatentStreamDecoder(model.codec, params)
    times: dict[str, list[float]] = {"encoder_256": [], "generator_1024": [], "latent_encode": [], "latent_decode": []}
    for crop in crops:
        t = time.process_time()
        w = model.project(crop[None])
        times["encoder_256"].append(time.process_time() - t)
        t = time.process_time()
        model.render(w)
        times["generator_1024"].append(time.process_time() - t)
        t = time.process_time()
        coded = enc.encode(w[0])
        times["latent_encode"].append(time.process_time() - t)
        t = time.process_time()
        dec.decode(coded.type, coded.payload)
        times["latent_decode"].append(time.process_time() - t)
    return {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stand-in", type=Path, help="keep the stand-in .pt here and reuse it (default: build it afresh)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every command (default 1)")
    ap.add_argument("--frames", type=int, default=8, help="frames transcoded and decoded")
    ap.add_argument("--train-frames", type=int, default=9, help="frames per training clip encoded for the codec")
    ap.add_argument("--codec-steps", type=int, default=50, help="latent-codec training steps (speed, not quality)")
    args = ap.parse_args()
    from sganc_stream.models.recipe import psp_checkpoint

    clips = [SHARED / "data" / "clips" / c for c in (*TRAIN_CLIPS, TEST_CLIP)]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing or not (SHARED / "reference").is_dir():
        raise SystemExit(f"needs ../shared/reference and the clips {missing or TRAIN_CLIPS}")
    with tempfile.TemporaryDirectory(prefix="sganc-official-") as tmp:
        work = Path(tmp)  # every output afresh: nothing is resumed from an earlier run
        pt = args.stand_in or work / "psp_ffhq_encode.pt"
        t0 = time.perf_counter()
        if not pt.is_file():
            torch.save(psp_checkpoint(SHARED / "reference" / "layouts", seed=1), pt)
        made = time.perf_counter() - t0
        data = work / "data" / "clips"
        data.mkdir(parents=True)
        for clip in clips[:2]:
            (data / clip.name).symlink_to(clip)
        steps = {}
        steps["weights bundle"] = measured(["weights", "bundle", str(pt), str(work / "psp.safetensors")], args.threads)
        steps["prepare-faces"] = measured(["prepare-faces", str(work / "faces"), "--data", str(work / "data"), "--size",
                                           "256", "--clip-max-frames", str(args.train_frames), "--clip-val-fraction",
                                           "0"], args.threads)
        full = work / "psp_full.safetensors"
        steps["complete-bundle"] = measured(["complete-bundle", str(work / "psp.safetensors"), "--faces",
                                             str(work / "faces"), "--out", str(full), "--steps", str(args.codec_steps),
                                             "--batch", "4", "--quiet"], args.threads)
        report = work / "report.json"
        steps["transcode"] = measured(["transcode", "--model", str(full), "--max-frames", str(args.frames), "--quiet",
                                       "--identity-every", str(args.frames), "--recon", str(work / "recon.mp4"),
                                       "--aligned", str(work / "aligned.mp4"),
                                       "--report", str(report), str(clips[2]), str(work / "c.sgnc")], args.threads)
        steps["decode"] = measured(["decode", "--model", str(full), "--quiet", str(work / "c.sgnc"),
                                    str(work / "decoded.mp4")], args.threads)
        steps["inspect"] = measured(["inspect", str(full)], args.threads)
        rep = json.loads(report.read_text())
        components = component_times(full, work / "aligned.mp4", args.threads)
    frames = rep["frames"]
    per_frame = {
        "encode_ms": round(1000 / rep["speed"]["encode_fps"], 1),  # align + pSp + T + rANS, per frame
        "decode_ms": round(1000 / rep["speed"]["decode_fps"], 1),  # rANS + T⁻¹ + G at 1024, per frame
        "transcode_cpu_s_per_frame": round(steps["transcode"]["cpu_s"] / frames, 2),
        "decode_cpu_s_per_frame": round(steps["decode"]["cpu_s"] / frames, 2),
    }
    result = {
        "stand_in": "official psp_ffhq_encode.pt layout (pSp IR-SE50 + StyleGAN2 1024 cm2, 300,336,784 values) with "
                    "the seeded recipe weights of ../shared/reference (random: timing and memory only)",
        "stand_in_build_s": round(made, 1), "frames": frames, "threads": args.threads,
        "train_frames_per_clip": args.train_frames, "codec_steps": args.codec_steps,
        "alignment": rep["alignment"], "quality_size": rep["quality"]["size"], "kbps": rep["kbps"],
        "per_frame": per_frame, "components_cpu_ms": components, "steps": steps,
    }
    path = write_result("official_model", result)
    print(f"| command | wall s | CPU s | peak RSS MB |\n|---|---|---|---|")
    for name, s in steps.items():
        print(f"| {name} | {s['wall_s']} | {s['cpu_s']} | {s['peak_rss_mb']} |")
    print(f"\nper frame at 1024 ({frames} frames, {args.threads} thread(s)): {json.dumps(per_frame)}")
    print(f"CPU ms per frame, median (this process): {json.dumps(components)}\n→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
