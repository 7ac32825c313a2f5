"""Rate control (``--target-kbps``, bitstream v4) on held-out clips with the shipped face model.

    python benchmarks/rate_control.py [--targets 10 20 40] [--g 10] [--add-steps 3 4 6 ...] [--clips FILE ...]
    python benchmarks/rate_control.py --inter-context temporal [--decimation 2]   # rate control in bitstream v6
    python benchmarks/rate_control.py --tables bundle [--drift-damping 0.5 --rounding-offset 0.1667]   # as shipped

What it does: W+ of each clip as ``transcode`` makes it (align + E, cached under out/rate_control/ by model id);
with ``--tables fit`` (default) the model's Δ presets (v0's: 0.5, 1, 2) extended in memory by ``add_coarser_steps`` (Δ = 3, 4, 6, 8, 12, 16, 24,
32: difference tables fitted on training-identity clips, intra tables rebinned) and empirical residual tables for g
fitted on the same clips (with ``--tables bundle`` the model's own presets and tables, as a user of it codes; with
``--inter-context temporal``, temporal-context tables for every preset too,
``training.latent_codec.fit_context``; with ``--decimation d``, every d-th frame coded: bitstream v6 when
rate-controlled, results in rate_control_<context>_d<d>.json; ``_bundle`` appended with ``--tables bundle``, ``_dz`` with a drift damping or rounding offset); then
every clip coded open-loop with residual period g at each target, with each residual table. Reported per stream: the packet rate (payload + framing, what a file
and a data-channel message carry; not the container header, not SCTP/DTLS/UDP/IP) of every 10-second window (one
starting at every whole second), the share of windows within ±10 % of the target, the steps used, the latent MSE
against E(x); every rate-controlled stream is decoded and its integer states compared with the encoder's. T and T⁻¹ run batched
over each clip (``BatchCodec``), so latent MSE is within float tolerance of a per-frame run. Fixed-step
streams at every preset give the operating points the controller chooses among. Writes
benchmarks/results/rate_control.json.

Identity distances are not measured here (rendering and scoring every stream would take hours on this CPU); latent
MSE is the quality figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bitrate_systems import REPO, SHARED_CLIPS, load_clip, safe
from common import write_result
from rate_control_report import plot
from sganc_stream.assets import default_face_model
from sganc_stream.bitstream.container import decode_container
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import decode_sequence, encode_sequence, interpolate
from sganc_stream.pipeline import FaceModel, load_face_model
from sganc_stream.training.latent_codec import add_coarser_steps, fit_context, fit_empirical_residuals

# Held-out identities of the shipped model (validation split of prepare-faces: Obama, Kristi Noem), 18–30 s each.
HELD_OUT = ("styletalk/source_video/Obama_clip2.mp4", "styletalk/source_video/KristiNoem.mp4", "edtalk/uncrop_Obama.mp4")
# Training identities (andrew, reagan, feifeili, Katie Hill) for the new presets' tables and the residual fit.
TRAIN = (("styletalk/source_video/andrew_clip_1.mp4", 400), ("styletalk/source_video/reagan_clip1.mp4", 400),
         ("styletalk/source_video/feifeili_clip1.mp4", 300), ("sadtalker_hdtf/WDA_KatieHill_000.mp4", 300))
WINDOW_S = 10.0
TOLERANCE = 0.10
CACHE = REPO / "out" / "rate_control"


def clip_wplus(face: FaceModel, rel: str, max_frames: int | None) -> tuple[np.ndarray, float]:
    """(W+ (frames with a face, rows, width) float32, fps) of a shared clip, cached by model id and clip."""
    path = SHARED_CLIPS / rel
    cached = CACHE / f"{face.model_id[:12]}__{safe(rel)}__{max_frames or 'all'}.npz"
    if cached.exists():
        z = np.load(cached)
        return z["wplus"], float(z["fps"])
    clip = load_clip(face, path, max_frames, rel, "", {})
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, wplus=clip.wplus.astype(np.float32), fps=clip.fps)
    return clip.wplus.astype(np.float32), clip.fps


def windows(record_bytes: list[int], fps: float) -> list[float]:
    """kbit/s of every WINDOW_S window of packets, one starting at every whole second (packet k is frame k)."""
    n, span = len(record_bytes), int(round(WINDOW_S * fps))
    bits = np.concatenate([[0], np.cumsum(8 * np.asarray(record_bytes, dtype=np.int64))])
    starts = [int(round(s * fps)) for s in range(int((n - span) / fps) + 1)]
    return [float(bits[a + span] - bits[a]) / WINDOW_S / 1000 for a in starts if a + span <= n]


class BatchCodec:
    """The latent codec with T computed once per clip for all frames, and T⁻¹ deferred: ``from_state`` records the
    integer state it is given (the encoder's or the decoder's) and returns a placeholder; :meth:`recon` then runs T⁻¹
    on all recorded states at once. Batched float results differ from per-frame ones in the last bits (SPEC §7); the
    integers are the codec's own. On this loaded 2-core VM per-frame T and T⁻¹ are most of a stream's time."""

    def __init__(self, model: LatentCodecModel, wplus: np.ndarray) -> None:
        self._model = model
        with torch.no_grad():
            w = torch.from_numpy(wplus)
            parts = [flow(w[:, a:b].reshape(-1, model.width)).reshape(len(w), (b - a) * model.width)
                     for flow, (a, b) in zip(model.flows, model.groups)]
        proxies = torch.cat(parts, 1).double().numpy()
        self._proxy = {wplus[i].tobytes(): proxies[i] for i in range(len(wplus))}
        self.states: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def to_proxy(self, wplus: np.ndarray) -> np.ndarray:
        return self._proxy[np.ascontiguousarray(wplus, dtype=np.float32).tobytes()]

    def from_state(self, state: np.ndarray, step_index: int) -> np.ndarray:
        self.states.append(state.copy())
        return np.zeros((self._model.rows, self._model.width), np.float32)

    def recon(self, step_index: int) -> np.ndarray:
        """T⁻¹(Δ · state) of every recorded state, (n, rows, width) float32, in one batch per stage group."""
        m = self._model
        y = torch.from_numpy(np.stack(self.states).astype(np.float32) * np.float32(m.steps[step_index]))
        y = y.reshape(len(self.states), m.rows, m.width)
        with torch.no_grad():
            out = [flow.inverse(y[:, a:b].reshape(-1, m.width)).reshape(len(y), b - a, m.width)
                   for flow, (a, b) in zip(m.flows, m.groups)]
        return torch.cat(out, 1).numpy()


def code(codec: LatentCodecModel, wplus: np.ndarray, fps: float, params: StreamParams, check: bool) -> dict[str, Any]:
    enc = BatchCodec(codec, wplus)
    res = encode_sequence(enc, wplus, params, fps)  # type: ignore[arg-type]
    container = decode_container(res.data)
    win = windows(container.record_bytes, container.header.fps)  # packets' rate (the source's / decimation)
    for c in res.coded:  # T⁻¹ of each packet's state, recorded in order (BatchCodec)
        assert c is not None
        c.recon
    recon = interpolate(enc.recon(params.step_index), [c is not None and c.type.is_intra for c in res.coded],
                        params.decimation)[0][:len(wplus)]
    out: dict[str, Any] = {
        "frames": len(wplus), "seconds": len(wplus) / fps, "file_bytes": len(res.data), "version": container.header.version,
        "packet_kbps": 8 * sum(container.record_bytes) / (len(wplus) / fps) / 1000,
        "latent_mse": float(np.mean((recon.astype(np.float64) - wplus) ** 2)),
        "window_kbps": [round(w, 3) for w in win],
        "steps_used": {f"{res.steps[j]:g}": int(c) for j, c in enumerate(np.bincount(res.step_choices, minlength=len(res.steps))) if c},
    }
    if params.target_kbps is not None:
        t = params.target_kbps
        out["window_error"] = [round(w / t - 1, 4) for w in win]
        out["windows_within"] = int(sum(abs(w / t - 1) <= TOLERANCE for w in win))
        out["windows"] = len(win)
        out["worst_window_error"] = float(max((abs(w / t - 1) for w in win), default=float("nan")))
    if check:  # the decoder's integer states are the encoder's, every frame
        dec = BatchCodec(codec, wplus[:0])
        decode_sequence(dec, container)  # type: ignore[arg-type]
        out["decodes_exactly"] = len(dec.states) == len(enc.states) and all(
            np.array_equal(a, b) for a, b in zip(dec.states, enc.states))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="face-model bundle (default: the shipped one)")
    ap.add_argument("--clips", nargs="*", default=list(HELD_OUT), help="clips under ../shared/data/clips")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--targets", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    ap.add_argument("--g", type=int, default=10)
    ap.add_argument("--add-steps", type=float, nargs="*", default=[3, 4, 6, 8, 12, 16, 24, 32],
                    help="presets added in memory, each an integer multiple of a preset (add_coarser_steps)")
    ap.add_argument("--residuals", nargs="+", default=["empirical", "irwin_hall"])
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-step streams at every preset")
    ap.add_argument("--inter-context", choices=["factorized", "temporal"], default="factorized",
                    help="temporal: context tables fitted in memory on the training clips for every preset")
    ap.add_argument("--decimation", type=int, default=1, help="code every d-th frame (bitstream v5/v6)")
    ap.add_argument("--drift-damping", type=float, default=0.0, help="open-loop drift damping (encoder only)")
    ap.add_argument("--rounding-offset", type=float, default=0.5,
                    help="quantizer of the differences, sign(x)·floor(|x| + F) (encoder only; 0.5 rounds)")
    ap.add_argument("--tables", choices=("fit", "bundle"), default="fit",
                    help="fit: --add-steps presets and the empirical residual (and context) tables fitted in memory on "
                         "the training clips (default); bundle: the model's own presets and tables, as shipped")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    face = load_face_model(args.model or default_face_model())
    codec = face.codec
    presets = list(codec.steps)
    train = [clip_wplus(face, rel, n)[0] for rel, n in tqdm(TRAIN if args.tables == "fit" else (), desc="training clips (align + E)")]
    clips = {rel: clip_wplus(face, rel, args.max_frames) for rel in tqdm(args.clips, desc="held-out clips (align + E)")}
    if args.tables == "fit":
        add_coarser_steps(codec, train, args.add_steps)
        codec.empirical_residuals = fit_empirical_residuals(codec, train, (args.g,))
        if args.inter_context == "temporal":
            codec.context_tables = fit_context(codec, train)
    finest = int(np.argmin(codec.steps))
    runs: list[dict[str, Any]] = []
    jobs: list[tuple[str, float | None, int]] = [(r, t, finest) for r in args.residuals for t in args.targets]
    # fixed-step streams: the operating points the controller chooses among
    jobs += [] if args.no_fixed else [(args.residuals[0], None, i) for i in range(len(codec.steps))]
    for residual, target, step_index in tqdm(jobs, desc="streams"):
        params = StreamParams("open", args.g, step_index, residual=residual, target_kbps=target,
                              inter_context=args.inter_context, decimation=args.decimation,
                              damping=args.drift_damping, rounding_offset=args.rounding_offset)
        fixed = target is None
        for rel, (wplus, fps) in clips.items():
            row = {"clip": rel, "residual": residual, "g": args.g, "target_kbps": target,
                   "step": codec.steps[step_index] if fixed else None,
                   **code(codec, wplus, fps, params, check=not fixed)}
            runs.append(row)
            label = f"Δ = {row['step']:g}" if fixed else f"target {target:g}"
            tqdm.write(f"{rel} {residual} {label}: "
                       f"{row['packet_kbps']:.2f} kbps, windows {min(row['window_kbps']):.1f}–{max(row['window_kbps']):.1f}, "
                       f"MSE {row['latent_mse']:.3g}, steps {row['steps_used']}")
    summary = []
    for residual in args.residuals:
        for t in args.targets:
            rows = [r for r in runs if r["residual"] == residual and r["target_kbps"] == t]
            allw = [w for r in rows for w in r["window_kbps"]]
            summary.append({"residual": residual, "target_kbps": t, "windows": len(allw),
                            "windows_within_10pct": sum(r["windows_within"] for r in rows),
                            "min_window_kbps": min(allw), "max_window_kbps": max(allw),
                            "packet_kbps": [round(r["packet_kbps"], 2) for r in rows],
                            "latent_mse": [r["latent_mse"] for r in rows],
                            "decodes_exactly": all(r.get("decodes_exactly", True) for r in rows),
                            "decoded_clips": [r["clip"] for r in rows if "decodes_exactly" in r]})
    name = ("rate_control" if (args.inter_context, args.decimation) == ("factorized", 1)
            else f"rate_control_{args.inter_context}_d{args.decimation}") + ("_bundle" if args.tables == "bundle" else "") \
        + ("_dz" if (args.drift_damping, args.rounding_offset) != (0.0, 0.5) else "")
    out = write_result(name, {
        "model_id": face.model_id, "presets_shipped": presets, "presets_used": codec.steps,
        "inter_context": args.inter_context, "decimation": args.decimation, "tables": args.tables,
        "drift_damping": args.drift_damping, "rounding_offset": args.rounding_offset,
        "new_presets": ("difference tables: per-channel histograms of the training clips' differences; intra tables: "
                        "the coarsest preset dividing the new step, rebinned (training.latent_codec.add_coarser_steps)"
                        if args.tables == "fit" else None),
        "train_clips": [r for r, _ in TRAIN] if args.tables == "fit" else [], "train_frames": int(sum(len(t) for t in train)),
        "rate": "packet kbit/s: payload + framing of every packet whose frame lies in the window (no container "
                "header, no transport overhead)",
        "window_s": WINDOW_S, "tolerance": TOLERANCE, "summary": summary, "runs": runs,
        "wall_s": round(time.perf_counter() - t0, 1)})
    print(f"\nresults in {out}; plot in {plot(json.loads(out.read_text()), out.with_suffix('.png'))}\n")
    print("| residual table | target kbit/s | 10-s windows within ±10 % | window kbit/s (min–max) | whole clip kbit/s | latent MSE |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['residual']} | {s['target_kbps']:g} | {s['windows_within_10pct']} / {s['windows']} | "
              f"{s['min_window_kbps']:.1f}–{s['max_window_kbps']:.1f} | {', '.join(f'{k:.1f}' for k in s['packet_kbps'])} | "
              f"{', '.join(f'{m:.3g}' for m in s['latent_mse'])} |")
    return 0 if all(s["decodes_exactly"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
