"""Temporal context and decimation (bitstream v5) against today's stream, at equal latent MSE (issue 16, points 2 and 4).

    python benchmarks/inter_context.py [--g 10] [--classes 8] [--clips FILE ...] [--max-frames N] [--systems NAME ...]
        [--tables fit|bundle] [--baseline-step 1] [--model BUNDLE]
        [--out NAME]     # results in benchmarks/results/NAME.json (default inter_context)
    python benchmarks/inter_context.py --from-json benchmarks/results/inter_context.json   # table and plot again

What it does: W+ of the held-out clips and of training-identity clips as ``transcode`` makes them (align + E, cached
under out/rate_control/ by model id, shared with rate_control.py); the shipped model's temporal-context tables
(``fit_context``) and empirical residual table for g fitted in memory on the training clips; then every
held-out clip coded open-loop with residual period g at each of the model's step presets by each system:

* ``today``: the factorized difference tables, Irwin–Hall residuals, every frame (bitstream v2, the default);
* ``temporal``: temporal context (v5); ``temporal+empirical``: and the empirical residual table (v5);
* ``decimation k``: every k-th frame coded, W+ interpolated by the decoder (v5), with and without the other tools;
* ``damping α``: the encoder's differences correct a share α of the open-loop drift (encoder only, any version);
* ``dead zone``: differences quantized with rounding offset 1/6 (``latent.quantize``; encoder only, any version);
* closed loop (no residuals, so no g) with and without temporal context and the dead zone.

Each system's context and empirical residual tables are fitted on what its own encoder (mode, damping, dead zone,
decimation) sends on the training clips (``training.latent_codec.coded_integers``). With ``--tables bundle`` nothing
is fitted and no preset added: every system codes with the model's own tables, as a user of that bundle would (they
were fitted by ``fit-context-tables`` for one encoder, so only that encoder's system is a fair reading).

With ``--tables fit`` the presets (v0's: Δ = 0.5, 1, 2) get Δ = 1.5 added in memory (``add_coarser_steps``: difference table a histogram
of the training clips' differences, intra table rebinned), so systems whose MSE at Δ = 1 is below today's have a point
between.

Every v5 stream sends all-zero differences (repeated source frames) as repeats (empty inter packets).

Rates are whole-stream: the .sgnc file's bits (container header, packet framing, END packet) per **source** frame, and
kbit/s at the source's frame rate; the data-channel wire estimate (rtc.wire, per packet record) is given too. Quality:
latent MSE against E(x) on every source frame (interpolated frames included). Equal-MSE rule: each system's bits per
frame at the MSE of ``today`` at ``--baseline-step`` (Δ = 1, v0's middle preset), interpolated log-linearly on the system's operational
curve over the presets, pooled over clips (rd.rate_at_quality; never extrapolated: None where the curve does not
reach it). Every stream is decoded and its integer states compared with the encoder's. T and T⁻¹ run batched over
each clip (rate_control.BatchCodec). Also counted: inter packets whose difference is all zero (what they cost).
Writes benchmarks/results/inter_context.json and .png.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from common import write_result
from rate_control import HELD_OUT, TRAIN, BatchCodec, clip_wplus
from rd import rate_at_quality
from sganc_stream.assets import default_face_model
from sganc_stream.bitstream.container import decode_container
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.latent.breakdown import bit_breakdown
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import decode_sequence, encode_sequence, interpolate
from sganc_stream.pipeline import load_face_model
from sganc_stream.training.latent_codec import add_coarser_steps, fit_context, fit_empirical_residuals

DZ = 1 / 6  # the dead zone's rounding offset: the H.264/AVC reference encoder's for inter blocks (not tuned here)
# name → (mode, inter context, residual table, decimation, drift damping, rounding offset); open mode with period --g
SYSTEMS: dict[str, tuple[str, str, str, int, float, float]] = {
    "today": ("open", "factorized", "irwin_hall", 1, 0.0, 0.5),
    "today, damping 0.5, dead zone (v2, as the call)": ("open", "factorized", "irwin_hall", 1, 0.5, DZ),
    "temporal": ("open", "temporal", "irwin_hall", 1, 0.0, 0.5),
    "temporal+empirical": ("open", "temporal", "empirical", 1, 0.0, 0.5),
    "temporal+empirical, damping 0.2": ("open", "temporal", "empirical", 1, 0.2, 0.5),
    "temporal+empirical, damping 0.4": ("open", "temporal", "empirical", 1, 0.4, 0.5),
    "temporal+empirical, damping 0.5, dead zone": ("open", "temporal", "empirical", 1, 0.5, DZ),
    "decimation 2": ("open", "factorized", "irwin_hall", 2, 0.0, 0.5),
    "decimation 3": ("open", "factorized", "irwin_hall", 3, 0.0, 0.5),
    "temporal+empirical, decimation 2": ("open", "temporal", "empirical", 2, 0.0, 0.5),
    "temporal+empirical, decimation 2, damping 0.2": ("open", "temporal", "empirical", 2, 0.2, 0.5),
    "temporal+empirical, decimation 2, damping 0.5, dead zone": ("open", "temporal", "empirical", 2, 0.5, DZ),
    "temporal+empirical, decimation 3, damping 0.5, dead zone": ("open", "temporal", "empirical", 3, 0.5, DZ),
    "closed (no g)": ("closed", "factorized", "irwin_hall", 1, 0.0, 0.5),
    "closed, dead zone (no g; v2, as the call)": ("closed", "factorized", "irwin_hall", 1, 0.0, DZ),
    "closed+temporal (no g)": ("closed", "temporal", "irwin_hall", 1, 0.0, 0.5),
    "closed+temporal, dead zone (no g)": ("closed", "temporal", "irwin_hall", 1, 0.0, DZ),
    "closed+temporal, dead zone, decimation 2 (no g)": ("closed", "temporal", "irwin_hall", 2, 0.0, DZ),
    "closed+temporal, dead zone, decimation 3 (no g)": ("closed", "temporal", "irwin_hall", 3, 0.0, DZ),
}
ADDED_STEPS = (1.5,)  # a preset between the shipped 1 and 2 (3 × 0.5), added in memory: equal MSE falls between them
BASELINE = "today"


def code(codec: LatentCodecModel, wplus: np.ndarray, fps: float, params: StreamParams) -> dict[str, Any]:
    """One stream: whole-file bits per source frame, kbit/s, wire estimate, latent MSE over every source frame,
    per-packet-type costs, all-zero differences, and whether the decoder's integer states are the encoder's."""
    enc = BatchCodec(codec, wplus)
    res = encode_sequence(enc, wplus, params, fps)  # type: ignore[arg-type]
    for c in res.coded:  # T⁻¹ of each packet's state, recorded in order (BatchCodec)
        assert c is not None
        c.recon
    packets = enc.recon(params.step_index)
    decoded = interpolate(packets, [c.type.is_intra for c in res.coded if c is not None], params.decimation)[0]
    n = len(wplus)
    container = decode_container(res.data)
    dec = BatchCodec(codec, wplus[:0])
    decode_sequence(dec, container)  # type: ignore[arg-type]
    exact = len(dec.states) == len(enc.states) and all(np.array_equal(a, b) for a, b in zip(dec.states, enc.states))
    b = bit_breakdown(container, codec, transport=True).to_dict()
    inter = [(c, bits) for c, bits in zip(res.coded, res.payload_bits) if c is not None and c.type == PacketType.INTER]
    states = [c.state for c in res.coded if c is not None]
    types = [c.type for c in res.coded if c is not None]
    zero = [i for i in range(1, len(states)) if types[i] == PacketType.INTER and np.array_equal(states[i], states[i - 1])]
    seconds = n / fps
    return {
        "frames": n, "seconds": seconds, "packets": len(container.packets), "file_bits": 8 * len(res.data),
        "bits_per_frame": 8 * len(res.data) / n, "kbps": 8 * len(res.data) / seconds / 1000,
        "wire_kbps": b["transport"]["wire_bits"] / seconds / 1000,
        "framing_bits": b["framing_bits"], "container_bits": b["container"]["header_bits"] + b["container"]["end_bits"],
        "inter_packet_payload_bits": float(np.mean([bits for _, bits in inter])) if inter else None,
        "by_packet_type": {k: {"packets": v["packets"], "bits_per_packet": v["bits_per_packet"]}
                           for k, v in b["by_packet_type"].items()},
        "by_part_bits": {p: v["bits"] for p, v in b["by_part"].items()},
        "latent_mse": float(np.mean((decoded[:n].astype(np.float64) - wplus) ** 2)),
        "all_zero_differences": len(zero),
        "all_zero_difference_packet_bytes": sorted({len(res.coded[i].payload) for i in zero}) if zero else [],  # type: ignore[union-attr]
        "decodes_exactly": exact,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="face-model bundle (default: the shipped one)")
    ap.add_argument("--clips", nargs="*", default=list(HELD_OUT), help="held-out clips under ../shared/data/clips")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--g", type=int, default=10)
    ap.add_argument("--classes", type=int, default=8, help="channel classes of the context tables")
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS), metavar="NAME",
                    help="systems to code (default: all; today's is always coded, it is the reference)")
    ap.add_argument("--tables", choices=("fit", "bundle"), default="fit",
                    help="fit: each system's context and empirical residual tables fitted in memory on the training "
                         "clips, and Δ = 1.5 added (default); bundle: the model's own tables as shipped (fitted for "
                         "one encoder by fit-context-tables; only the systems with that encoder are meaningful), no "
                         "preset added")
    ap.add_argument("--baseline-step", type=float, default=1.0,
                    help="today's operating point whose latent MSE the systems are compared at (default 1, the "
                         "middle preset of the models with presets 0.5, 1, 2)")
    ap.add_argument("--out", default="inter_context",
                    help="results name under benchmarks/results (default: %(default)s)")
    ap.add_argument("--from-json", metavar="JSON", help="summarize a results file again (no coding)")
    args = ap.parse_args()
    if args.from_json:
        return from_json(args.from_json)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    face = load_face_model(args.model or default_face_model())
    codec = face.codec
    train = [clip_wplus(face, rel, n)[0] for rel, n in tqdm(TRAIN if args.tables == "fit" else (), desc="training clips (align + E)")]
    clips = {rel: clip_wplus(face, rel, args.max_frames) for rel in tqdm(args.clips, desc="held-out clips (align + E)")}
    baseline_step = codec.steps[codec.step_index(args.baseline_step)]  # InputError for a step that is no preset
    if args.tables == "fit":
        add_coarser_steps(codec, train, ADDED_STEPS)
    systems = [BASELINE] + [n for n in args.systems if n != BASELINE]
    runs: list[dict[str, Any]] = []
    context_bytes = 0
    for name in tqdm(systems, desc="systems"):
        mode, context, residual, d, damping, offset = SYSTEMS[name]
        base = StreamParams(mode, args.g if mode == "open" else 0, 0, residual=residual, inter_context=context,
                            decimation=d, damping=damping, rounding_offset=offset)
        # each system's tables are fitted on what its own encoder sends on the training clips (in memory)
        if context == "temporal" and args.tables == "fit":
            codec.context_tables = fit_context(codec, train, args.classes, params=base)
        if context == "temporal":
            context_bytes = sum(t.classes.size + 4 * t.offsets.size + 2 * t.freqs.size for t in codec.context_tables)
        if residual == "empirical" and args.tables == "fit":
            codec.empirical_residuals = fit_empirical_residuals(codec, train, (args.g,), params=base)
        for si in range(len(codec.steps)):
            params = replace(base, step_index=si)
            for rel, (wplus, fps) in clips.items():
                row = {"system": name, "clip": rel, "step": codec.steps[si], **code(codec, wplus, fps, params)}
                runs.append(row)
                tqdm.write(f"{name:34s} Δ={codec.steps[si]:g} {rel}: {row['bits_per_frame']:.0f} bits/frame, "
                           f"{row['kbps']:.1f} kbit/s, MSE {row['latent_mse']:.4g}, exact {row['decodes_exactly']}")
    curves, base, summary = summarize(runs, sorted(codec.steps), baseline_step)
    out = write_result(args.out, {
        "model_id": face.model_id, "g": args.g, "steps": sorted(codec.steps), "baseline_step": baseline_step,
        "added_steps": list(ADDED_STEPS) if args.tables == "fit" else [],
        "classes": args.classes if args.tables == "fit" else (codec.context_tables[0].num_classes
                                                              if codec.context_tables else None),
        "context_tables_bytes_raw": context_bytes,
        "train_clips": [r for r, _ in TRAIN] if args.tables == "fit" else [], "held_out_clips": list(clips),
        "systems": {k: {"mode": m, "inter_context": c, "residual": r, "decimation": d, "damping": a,
                        "rounding_offset": f} for k, (m, c, r, d, a, f) in SYSTEMS.items() if k in systems},
        "tables": ("each system's context and empirical residual tables fitted in memory on the differences and "
                   "residuals its own encoder sends on the training clips (training.latent_codec.coded_integers)"
                   if args.tables == "fit" else "the model's own context and empirical residual tables, as stored"),
        "rate": "whole .sgnc file bits (container header, packet framing, END packet) per source frame; kbit/s at the "
                "source frame rate; wire: rtc.wire estimate per packet record as one data-channel message",
        "quality": "latent MSE against E(x) on every source frame, interpolated frames included",
        "equal_mse_rule": f"bits/frame at today's MSE at Δ = {baseline_step:g} (g = {args.g}), log-rate interpolated "
                          "over the presets on each system's pooled curve (rd.rate_at_quality), never extrapolated",
        "baseline": {"system": BASELINE, **base}, "summary": summary, "curves": curves, "runs": runs,
        "wall_s": round(time.perf_counter() - t0, 1)})
    plot(curves, base, out.with_suffix(".png"))
    print(f"\nresults in {out}\n")
    print(table(summary, list(clips)))
    return 0


def summarize(runs: list[dict[str, Any]], steps: list[float], baseline_step: float
              ) -> tuple[dict[str, list[dict[str, float]]], dict[str, float], list[dict[str, Any]]]:
    """(pooled curve per system over the presets ``steps`` (ascending), today's point at ``baseline_step``, the
    equal-MSE summary: file bits per source frame and wire bits per source frame at today's MSE, pooled and per clip,
    and each system's bits and MSE at ``baseline_step``)."""
    clips = sorted({r["clip"] for r in runs}, key=[r["clip"] for r in runs].index)
    names = sorted({r["system"] for r in runs}, key=[r["system"] for r in runs].index)
    curves: dict[str, list[dict[str, float]]] = {}
    for name in names:
        pts = []
        for step in steps:
            rows = [r for r in runs if r["system"] == name and r["step"] == step]
            frames, seconds = sum(r["frames"] for r in rows), sum(r["seconds"] for r in rows)
            wire = sum(r["wire_kbps"] * 1000 * r["seconds"] for r in rows)
            pts.append({"step": step, "bits_per_frame": sum(r["file_bits"] for r in rows) / frames,
                        "wire_bits_per_frame": wire / frames,
                        "latent_mse": sum(r["latent_mse"] * r["frames"] for r in rows) / frames,
                        "kbps": sum(r["file_bits"] for r in rows) / seconds / 1000, "wire_kbps": wire / seconds / 1000})
        curves[name] = pts
    mid = steps.index(baseline_step)
    base = curves[BASELINE][mid]
    summary = []
    for name, pts in curves.items():
        bits, why = rate_at_quality([(p["bits_per_frame"], p["latent_mse"]) for p in pts], base["latent_mse"])
        wire, _ = rate_at_quality([(p["wire_bits_per_frame"], p["latent_mse"]) for p in pts], base["latent_mse"])
        per_clip = {}
        for rel in clips:
            rows = [r for r in runs if r["clip"] == rel and r["system"] == name]
            ref = next(r for r in runs if r["clip"] == rel and r["system"] == BASELINE and r["step"] == baseline_step)
            at, _ = rate_at_quality([(r["bits_per_frame"], r["latent_mse"]) for r in rows], ref["latent_mse"])
            per_clip[rel] = at / ref["bits_per_frame"] if at else None
        summary.append({"system": name, "bits_per_frame_at_equal_mse": bits, "note": why, "ratio_per_clip": per_clip,
                        "ratio_to_today": bits / base["bits_per_frame"] if bits else None,
                        "wire_ratio_to_today": wire / base["wire_bits_per_frame"] if wire else None,
                        "same_step_bits_per_frame": pts[mid]["bits_per_frame"], "same_step_mse": pts[mid]["latent_mse"]})
    return curves, base, summary


def table(summary: list[dict[str, Any]], clips: list[str]) -> str:
    """The summary as a markdown table."""
    lines = ["| system | bits/frame at today's MSE | × today (per clip: " + ", ".join(c.split("/")[-1] for c in clips)
             + ") | wire × today | same Δ = 1: bits/frame, MSE |", "|---|---|---|---|---|"]
    for s in summary:
        at = f"{s['bits_per_frame_at_equal_mse']:.0f}" if s["bits_per_frame_at_equal_mse"] else f"— ({s['note']})"
        per = ", ".join(f"{v:.2f}" if v else "—" for v in s["ratio_per_clip"].values())
        ratio = f"**{s['ratio_to_today']:.2f}** ({per})" if s["ratio_to_today"] else "—"
        wire = f"{s['wire_ratio_to_today']:.2f}" if s["wire_ratio_to_today"] else "—"
        lines.append(f"| {s['system']} | {at} | {ratio} | {wire} | {s['same_step_bits_per_frame']:.0f}, "
                     f"{s['same_step_mse']:.4f} |")
    return "\n".join(lines)


def from_json(path: str) -> int:
    """Summary, table and plot again from a results file's runs (no coding)."""
    import json

    result = json.loads(open(path).read())
    curves, base, summary = summarize(result["runs"], result["steps"], result["baseline_step"])
    print(table(summary, result["held_out_clips"]))
    plot(curves, base, path.replace(".json", ".png"))
    return 0


def plot(curves: dict[str, list[dict[str, float]]], base: dict[str, float], path: Any) -> None:
    """Bits per source frame against latent MSE, one curve per system, today's operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, pts) in enumerate(curves.items()):
        style = {"color": "black", "lw": 2.5} if name == BASELINE else {"color": colors[(2 * i) % 20 + (i >= 10)]}
        ax.plot([p["latent_mse"] for p in pts], [p["bits_per_frame"] for p in pts], "o-", label=name, **style)
    ax.axvline(base["latent_mse"], color="grey", ls=":", lw=1)
    ax.axhline(base["bits_per_frame"] / 2, color="grey", ls="--", lw=1, label="½ × today at Δ = 1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent MSE vs E(x), every source frame")
    ax.set_ylabel("whole-stream bits per source frame")
    ax.set_title("g = 10: temporal context and decimation (held-out clips; closed loop for comparison)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
