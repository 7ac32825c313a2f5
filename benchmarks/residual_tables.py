"""Residual tables, coded for real: the paper's Irwin–Hall law vs the empirical (training-histogram) table.

    python benchmarks/residual_tables.py [--model M] [--train-clips N] [--clips FILE_OR_DIR ...] [--frames 100]

Fits empirical residual tables (``fit_empirical_residuals``, as ``train-latent-codec`` does) on the W+ of training-
identity clips (``bitrate_vs_g.DEFAULT_TRAIN_CLIPS``), then codes held-out MEAD M030 clips in open mode at each g,
middle Δ, with either table (bitstream v2 vs v3), decodes every stream and checks it against the encoder's
reconstruction. The tables are added to the loaded model in memory only. Writes benchmarks/results/residual_tables.json.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from bitrate_vs_g import SHARED_CLIPS, DEFAULT_TRAIN_CLIPS, clip_name_and_identity, find_clips, load_clip, manifest_hints
from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
from sganc_stream.pipeline import load_face_model
from sganc_stream.training.latent_codec import fit_empirical_residuals

GS = (2, 10, 40)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle (default: the shipped face model)")
    ap.add_argument("--train-clips", type=int, default=4, help="training-identity clips to fit on")
    ap.add_argument("--clips", nargs="*", default=None, help="held-out clips (default: the MEAD M030 clips of ../shared)")
    ap.add_argument("--max-clips", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100, help="frames per clip")
    args = ap.parse_args()
    torch.set_num_threads(1)
    face = load_face_model(args.model or default_face_model())
    codec, hints, proxies = face.codec, manifest_hints(), {}
    train = [load_clip(face, p, 2 * args.frames, *clip_name_and_identity(p, hints), proxies).wplus
             for p in (SHARED_CLIPS / c for c in DEFAULT_TRAIN_CLIPS[: args.train_clips])]
    codec.empirical_residuals = fit_empirical_residuals(codec, train, GS)
    evals = [load_clip(face, p, args.frames, *clip_name_and_identity(p, hints), proxies)
             for p in find_clips(args.clips)[: args.max_clips]]
    si = len(codec.steps) // 2
    rows = []
    for g in GS:
        row: dict = {"g": g, "step": codec.steps[si]}
        for residual in ("irwin_hall", "empirical"):
            bits = frames = res_bits = res_frames = 0
            exact = True
            for clip in evals:
                r = encode_sequence(codec, clip.wplus, StreamParams("open", g, si, 0, residual))
                exact &= bool(np.array_equal(decode_bytes(codec, r.data), r.recon))
                bits, frames = bits + 8 * len(r.data), frames + len(clip.wplus)
                res = [b for b, t in zip(r.payload_bits, r.frame_types) if t == "inter+residual"]
                res_bits, res_frames = res_bits + sum(res), res_frames + len(res)
            row[residual] = {"bits_per_frame": bits / frames, "residual_frame_payload_bits": res_bits / max(res_frames, 1),
                             "residual_frames": res_frames, "decodes_exactly": exact}
        ih, emp = row["irwin_hall"], row["empirical"]
        row["bits_per_frame_change"] = emp["bits_per_frame"] / ih["bits_per_frame"] - 1
        row["residual_frame_change"] = emp["residual_frame_payload_bits"] / ih["residual_frame_payload_bits"] - 1
        row["bits_saved_per_residual_frame"] = ih["residual_frame_payload_bits"] - emp["residual_frame_payload_bits"]
        rows.append(row)
    out = write_result("residual_tables", {"model_id": face.model_id, "fit_clips": list(DEFAULT_TRAIN_CLIPS[: args.train_clips]),
                                           "fit_frames": int(sum(len(t) for t in train)), "clips": [c.name for c in evals],
                                           "frames": int(sum(len(c.wplus) for c in evals)), "rows": rows})
    print(f"model {face.model_id[:12]}…; fitted on {sum(len(t) for t in train)} frames of {len(train)} training clips; "
          f"coded {sum(len(c.wplus) for c in evals)} frames of {len(evals)} held-out clips; results in {out}\n")
    print("| g | Δ | residual frames | payload bits per residual frame, Irwin–Hall → empirical | saved | change | "
          "whole stream bits/frame, Irwin–Hall → empirical | change |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        ih, emp = r["irwin_hall"], r["empirical"]
        print(f"| {r['g']} | {r['step']:g} | {ih['residual_frames']} | {ih['residual_frame_payload_bits']:.0f} → "
              f"{emp['residual_frame_payload_bits']:.0f} | {r['bits_saved_per_residual_frame']:.0f} | "
              f"{100 * r['residual_frame_change']:+.1f} % | "
              f"{ih['bits_per_frame']:.0f} → {emp['bits_per_frame']:.0f} | {100 * r['bits_per_frame_change']:+.1f} % |")
    return 0 if all(r[k]["decodes_exactly"] for r in rows for k in ("irwin_hall", "empirical")) else 1


if __name__ == "__main__":
    sys.exit(main())
