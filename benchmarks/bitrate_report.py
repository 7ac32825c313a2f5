"""Tables and plots of the bitrate-versus-g benchmark, all from its result dict (so ``--from-json`` can redo them):
headline ratios, CSV, Markdown (also put into the README between markers) and the PNG plots, among them where the
bits go at g = 10 (``sganc_stream.latent.breakdown``: packet types, coded parts, stage groups, W+ rows).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from baselines import PIXEL_CODECS
from sganc_stream.latent.quantize import ROUNDING_OFFSET
from bitrate_systems import HEADLINE_G, EncoderOptions, g_label
from common import RESULTS
from rd import headline_ratio, rate_at_quality

FULL_GS = (1, 2, 5, 10, 20, 40, 80, 0)
QUALITY_KEYS = [f"{m}_vs_{r}" for r in ("aligned", "projected") for m in ("psnr", "ms_ssim", "identity")]


# ----------------------------------------------------------------------------------------------------
# Headline figures


def _all(result: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if all(r.get(k) == v for k, v in match.items())]


def headlines(result: dict[str, Any]) -> dict[str, Any]:
    """Ours at g = 10 (each Δ; the headline is the middle Δ) vs x265 at equal median identity distance, and vs the
    naive latent coding at equal latent MSE. Ratio > 1: the other needs that many times our bits."""
    steps = result["model"]["steps"]
    mid = steps[len(steps) // 2]
    ours = sorted(_all(result, system="sganc", mode="open", g=str(HEADLINE_G)), key=lambda r: r["step"])
    out: dict[str, Any] = {"g": HEADLINE_G, "step": mid}
    x265 = [(r["payload_kbps"], r["identity_vs_aligned_median"]) for r in _all(result, system="x265")]
    naive = [(r["bits_per_frame"], r["latent_mse"]) for r in result["naive"]["rows"]]
    naive_clip = [(r["clip_bits_per_frame"], r["latent_mse"]) for r in result["naive"]["rows"]]
    per_step = []
    for r in ours:
        item = {"step": r["step"]}
        if x265:
            item["vs_x265_identity"] = headline_ratio((r["packet_kbps"], r["identity_vs_aligned_median"]), x265)
        item["vs_naive_latent_mse"] = headline_ratio((r["bits_per_frame"], r["latent_mse"]), naive)
        item["vs_naive_whole_clip_latent_mse"] = headline_ratio((r["bits_per_frame"], r["latent_mse"]), naive_clip)
        per_step.append(item)
    out["per_step"] = per_step
    at_mid = next((p for p in per_step if p["step"] == mid), None)
    if at_mid is not None:
        out["x265_over_ours_at_equal_identity"] = at_mid.get("vs_x265_identity", {}).get("ratio")
        out["naive_over_ours_at_equal_latent_mse"] = at_mid["vs_naive_latent_mse"]["ratio"]
    return out


# ----------------------------------------------------------------------------------------------------
# Outputs: CSV, Markdown, plots (all from the result dict, so --from-json can redo them)

CSV_FIELDS = ["clip", "system", "mode", "g", "step", "target_kbps", "frames", "scored_frames", "identity_frames",
              "payload_kbps", "packet_kbps", "file_kbps", "wire_kbps", "bits_per_frame", "latent_mse",
              *[k if not k.startswith("identity") else f"{k}_median" for k in QUALITY_KEYS],
              "identity_vs_aligned_mean", "identity_vs_projected_mean"]


def write_csv(result: dict[str, Any], path: Path) -> None:
    """Rows (ALL first, then per clip); '#' lines first carry command, commit and machine (pandas: comment='#')."""
    buf = io.StringIO()
    prov = result.get("provenance", {})
    for k in ("command", "commit", "date"):
        buf.write(f"# {k}: {prov.get(k, '')}\n")
    buf.write(f"# machine: {json.dumps(prov.get('machine', {}))}\n")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["rows"] + result["clip_rows"]:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_FIELDS})
    path.write_text(buf.getvalue())


def fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def encoder_label(encoder: dict[str, Any]) -> str:
    """The run's inter-coding options in words (EncoderOptions' fields, as resolved for the run's model; results from
    before they were recorded coded the paper's way)."""
    paper = {"inter_context": "factorized", "damping": 0.0, "rounding_offset": ROUNDING_OFFSET}
    return EncoderOptions(**{**paper, **encoder}).label()


def markdown(result: dict[str, Any], name: str) -> str:
    prov = result.get("provenance", {})
    m = result["model"]
    s = result["settings"]
    h = result["headline"]
    frames = sum(c["frames"] for c in result["clips"])
    lines = [f"### Bitrate versus g ({'quick smoke run' if s['quick'] else 'full grid'})", "",
             f"`{prov.get('command', '')}` — commit `{prov.get('commit', '')}`, {prov.get('date', '')}; "
             f"model `{m['model_id'][:12]}…` ({m['size']} px, W+ {m['rows']}×{m['width']}, Δ presets "
             f"{', '.join(f'{x:g}' for x in m['steps'])}); {len(result['clips'])} clips, {frames} frames; "
             f"residual table {s.get('residual', 'irwin_hall')} (`--residual-table`; auto: the model's empirical "
             "table where it has one for g); "
             f"inter coding {encoder_label(s.get('encoder', {}))}; "
             f"pixel metrics on 1 frame in {s['score_every']}, identity distance on 1 in {s['identity_every']} of those. "
             f"Results: `benchmarks/results/{name}.json` / `.csv`.", ""]
    lines += ["**Headline** (g = 10, middle Δ; rates are payload + packet framing for sganc, the elementary stream for "
              "x265; interpolated on the operational curves, never extrapolated):", ""]
    for item in h.get("per_step", []):
        for key, what in (("vs_x265_identity", "x265 at equal median identity distance"),
                          ("vs_naive_latent_mse", "naive W+ rounding + zlib/bzip2 per frame at equal latent MSE"),
                          ("vs_naive_whole_clip_latent_mse",
                           "naive W+ rounding + zlib/bzip2 of the whole clip at once (not streamable) at equal latent MSE")):
            if key not in item:
                continue
            x = item[key]
            unit = "kbps" if key == "vs_x265_identity" else "bits/frame"
            ratio = (f"**{x['ratio']:.2f}×** our rate ({fmt(x['other_kbps'], '.4g')} vs {fmt(x['our_kbps'], '.4g')} {unit})"
                     if x["ratio"] is not None else
                     f"no ratio, its curve does not reach ours: {x['status']}; ratio {x.get('ratio_bound') or '—'} "
                     f"(ours {fmt(x['our_kbps'], '.4g')} {unit})")
            lines.append(f"* Δ = {item['step']:g}: {what} (quality {fmt(x['quality'], '.4g')}) needs {ratio}")
    lines += ["", "| system | g / target | Δ | packet kbps | wire kbps | bits/frame | latent MSE | PSNR vs aligned | "
              "MS-SSIM vs aligned | identity vs aligned (median) | PSNR vs G(E(x)) | identity vs G(E(x)) (median) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"sganc": 0, **{k: i + 1 for i, k in enumerate(PIXEL_CODECS)}}
    gorder = {g_label(g): i for i, g in enumerate(FULL_GS)}
    mode_order = {"open": 0, "closed": 1, "intra": 2}
    for r in sorted(result["rows"], key=lambda r: (order.get(r["system"], 9), mode_order.get(r["mode"], 3),
                                                   gorder.get(r["g"], 99), r["step"] or 0, r["target_kbps"] or 0)):
        what = (f"open, g = {r['g']}" if r["mode"] == "open" else r["mode"]) if r["system"] == "sganc" \
            else f"{r['target_kbps']:g} kbps target"
        lines.append(f"| {r['system']} | {what} | {fmt(r['step'], 'g')} | {fmt(r['packet_kbps'], '.2f')} | "
                     f"{fmt(r['wire_kbps'], '.2f')} | {fmt(r['bits_per_frame'], '.0f')} | {fmt(r['latent_mse'], '.2e')} | "
                     f"{fmt(r['psnr_vs_aligned'], '.2f')} | {fmt(r['ms_ssim_vs_aligned'], '.4f')} | "
                     f"{fmt(r['identity_vs_aligned_median'], '.3f')} | {fmt(r['psnr_vs_projected'], '.2f')} | "
                     f"{fmt(r['identity_vs_projected_median'], '.3f')} |")
    for codec_name in PIXEL_CODECS:
        got = [r for r in result["rows"] if r["system"] == codec_name]
        if got:
            lines.append(f"\nLowest rate {codec_name} reached: {min(r['packet_kbps'] for r in got):.2f} kbps "
                         f"(targets down to {min(r['target_kbps'] for r in got):g} kbps).")
    proj = result["projection"]
    lines += ["", f"Projection G(E(x)) without coding, against the aligned original (the ceiling of every sganc row): "
              f"PSNR {fmt(proj.get('psnr_vs_aligned'), '.2f')} dB, MS-SSIM {fmt(proj.get('ms_ssim_vs_aligned'), '.4f')}, "
              f"median identity distance {fmt(proj.get('identity_vs_aligned_median'), '.3f')}."]
    kept = result.get("kept_files", [])[:4]
    if kept:
        lines += ["", "Some produced files, for independent measurement (all of them are listed in the JSON):", ""]
        for k in kept:
            rate = k.get("file_kbps", k.get("payload_kbps"))
            lines.append(f"* `{k['file']}`: {k['frames']} frames at {k['fps']:g} fps, {k['bytes']} bytes = {rate:.3f} kbps; "
                         f"mean PSNR vs the aligned crops on the scored frames {k['psnr_vs_aligned_scored']:.2f} dB")
    lines += ["", f"Naive latent coding (per frame; raw float32 W+ is {result['naive']['raw_float32_bits_per_frame']} "
              "bits/frame):", "", "| step | compressor | bits/frame | whole-clip bits/frame | latent MSE |", "|---|---|---|---|---|"]
    for r in result["naive"]["rows"]:
        lines.append(f"| {r['step']:g} | {r['compressor']} | {r['bits_per_frame']:.0f} | {r['clip_bits_per_frame']:.0f} | "
                     f"{r['latent_mse']:.2e} |")
    ab = result["ablations"]
    lines += ["", f"Ablations (trained codecs on training identities {', '.join(ab['train_identities']) or '—'}; "
              f"evaluated on {', '.join(ab['eval_identities'])}):", ""]
    var = ab["variants"]
    if "rows" in var:
        lines += [f"Stage groups vs one group, flow T vs none (open loop g = 10, {var['train_steps']} training steps "
                  f"each, λ = {var['lambda']:g}; ratios are bits relative to '{var['reference']}'):",
                  "", "| variant | Δ | bits/frame | latent MSE | stage-weighted MSE | bits / MSE vs reference at the same Δ | "
                  "bits vs reference at equal latent MSE | … at equal stage-weighted MSE |", "|---|---|---|---|---|---|---|---|"]

        def rel(r: dict[str, Any], suffix: str) -> str:
            v = r.get(f"bits_vs_reference{suffix}")
            return f"{v:.2f}×" if v else r.get(f"status{suffix}", "reference")

        for r in var["rows"]:
            same = (f"{r['bits_vs_reference_same_step']:.2f}× / {r['mse_vs_reference_same_step']:.2f}×"
                    if "bits_vs_reference_same_step" in r else "reference")
            lines.append(f"| {r['variant']} | {r['step']:g} | {r['bits_per_frame']:.0f} | {r['latent_mse']:.2e} | "
                         f"{fmt(r.get('weighted_latent_mse'), '.2e')} | {same} | {rel(r, '')} | {rel(r, '_weighted')} |")
    else:
        lines.append(f"Stage vs single / T vs identity: skipped ({var['skipped']}).")
    lines += ["", "Residual tables (ideal bits per residual frame; empirical = histogram of the training clips' residuals):",
              "", "| g | Δ | residual frames | Irwin–Hall | empirical | oracle (own histogram) | empirical vs IH | "
              "residual std | IH std |", "|---|---|---|---|---|---|---|---|---|"]
    for r in ab["irwin_hall_vs_empirical"]:
        if not r.get("residual_frames"):
            lines.append(f"| {r['g']} | — | 0 | — | — | — | — | — | — |")
            continue
        lines.append(f"| {r['g']} | {r['step']:g} | {r['residual_frames']} | {r['irwin_hall_bits_per_residual_frame']:.0f} | "
                     f"{fmt(r['empirical_bits_per_residual_frame'], '.0f')} | {r['oracle_bits_per_residual_frame']:.0f} | "
                     f"{fmt(None if r['empirical_vs_irwin_hall'] is None else 100 * r['empirical_vs_irwin_hall'], '+.1f')} % | "
                     f"{r['residual_std']:.3f} | {r['irwin_hall_std']:.3f} |")
    if ab.get("drift"):
        lines += ["", "Open- vs closed-loop drift (latent MSE against E(x), mean over clips, middle Δ):", "",
                  "| stream | frames 1–10 | frames 11–50 | frames 51+ |", "|---|---|---|---|"]
        for label, curve in ab["drift"].items():
            c = np.asarray(curve, dtype=np.float64)
            parts = [c[1:11], c[11:51], c[51:]]
            lines.append(f"| {label} | " + " | ".join(fmt(float(np.mean(p)) if len(p) else None, '.2e') for p in parts) + " |")
    lines += breakdown_markdown(result)
    t = result["timings_s"]
    lines += ["", f"Run time {t['total_s']:.0f} s (align + E {t['align_encode_s']:.0f} s, latent grid {t['latent_grid_s']:.0f} s, "
              f"pixel codecs {t['pixel_codecs_s']:.0f} s, ablations {t['ablations_s']:.0f} s); "
              f"re-coding matches the pipeline's packets: {result['pipeline_recoding_matches']}.",
              f"Plots: {', '.join(f'`{name}_{p}.png`' for p in PLOTS)}.", ""]
    return "\n".join(lines)


PLOTS = ("rd", "kbps_vs_g", "bits_over_time", "drift", "naive", "breakdown")


def plots(result: dict[str, Any], prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    rows = result["rows"]
    sg = [r for r in rows if r["system"] == "sganc"]
    prov = result.get("provenance", {})
    footer = f"{prov.get('command', '')} | commit {prov.get('commit', '')} | {prov.get('date', '')} | " \
             f"{prov.get('machine', {}).get('platform', '')}"
    # 1. rate–distortion per g (identity and PSNR vs aligned), with the pixel codecs
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, key, label in zip(axes, ("identity_vs_aligned_median", "psnr_vs_aligned", "ms_ssim_vs_aligned"),
                              ("median identity distance vs aligned (lower is better)", "PSNR vs aligned (dB)",
                               "MS-SSIM vs aligned")):
        groups: dict[str, list[dict]] = {}
        for r in sg:
            groups.setdefault(f"open g={r['g']}" if r["mode"] == "open" else r["mode"], []).append(r)
        for name in PIXEL_CODECS:
            if any(r["system"] == name for r in rows):
                groups[name] = [r for r in rows if r["system"] == name]
        for name, rs in groups.items():
            rs = sorted(rs, key=lambda r: r["packet_kbps"])
            pts = [(r["packet_kbps"], r[key]) for r in rs if r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), "o-" if name.startswith(("open", "closed", "intra")) else "s--", label=name, ms=4)
        ceiling = result["projection"].get(key)
        if ceiling is not None:
            ax.axhline(ceiling, color="k", ls=":", lw=1, label="projection G(E(x)) (no coding)")
        ax.set_xscale("log")
        ax.set_xlabel("kbps (packets: payload + framing; pixel codecs: elementary stream)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Rate–distortion per residual period g, and pixel codecs on the same aligned crops")
    fig.tight_layout()
    out.append(_save(fig, prefix, "rd", footer))
    # 2. kbps against g at fixed quality (fixed Δ; and at the latent MSE of g = 10, middle Δ, interpolated)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gs = sorted({r["g"] for r in sg if r["mode"] == "open"}, key=lambda g: (g == "never", int(g) if g != "never" else 0))
    xs = {g: i for i, g in enumerate(gs)}
    for step in sorted({r["step"] for r in sg}):
        pts = sorted((xs[r["g"]], r["packet_kbps"]) for r in sg if r["mode"] == "open" and r["step"] == step)
        if len(pts) > 1:
            ax.plot(*zip(*pts), "o--", label=f"Δ = {step:g}", alpha=0.7)
    target = next((r["latent_mse"] for r in sg if r["mode"] == "open" and r["g"] == str(HEADLINE_G)
                   and r["step"] == result["headline"]["step"]), None)
    if target is not None:
        pts = []
        for g in gs:
            rate, _ = rate_at_quality([(r["packet_kbps"], r["latent_mse"]) for r in sg if r["mode"] == "open" and r["g"] == g], target)
            if rate is not None:
                pts.append((xs[g], rate))
        if pts:
            ax.plot(*zip(*pts), "ko-", lw=2, label=f"at latent MSE {target:.2e} (interpolated)")
    ax.set_xticks(range(len(gs)), gs)
    ax.set_xlabel("residual period g (open loop)")
    ax.set_ylabel("kbps (payload + framing)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Rate against g at fixed quality")
    fig.tight_layout()
    out.append(_save(fig, prefix, "kbps_vs_g", footer))
    # 3. per-frame bits over time
    pfb = result["per_frame_bits"]
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, bits in pfb["bits"].items():
        if label.startswith("open") or label == "closed":
            ax.plot(bits, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("payload bits")
    ax.set_title(f"Per-frame bits, {pfb['clip']}, Δ = {pfb['step']:g}: residual spikes every g frames")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "bits_over_time", footer))
    # 4. drift
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, curve in result["ablations"].get("drift", {}).items():
        ax.plot(curve, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("latent MSE vs E(x)")
    ax.set_title("Open-loop drift vs closed loop (mean over clips, middle Δ)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "drift", footer))
    # 5. naive latent coding vs ours (and the ablation codecs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for comp in ("zlib", "bzip2"):
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in result["naive"]["rows"] if r["compressor"] == comp)
        ax.plot(*zip(*pts), "s--", label=f"naive rounding + {comp} (per frame)")
        pts = sorted((r["latent_mse"], r["clip_bits_per_frame"]) for r in result["naive"]["rows"] if r["compressor"] == comp)
        ax.plot(*zip(*pts), "x:", label=f"naive rounding + {comp} (whole clip, not streamable)")
    for label in sorted({(r["g"], r["mode"]) for r in sg if r["mode"] != "open" or r["g"] == str(HEADLINE_G)}, key=str):
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in sg if (r["g"], r["mode"]) == label)
        ax.plot(*zip(*pts), "o-", label=f"sganc {label[1]}" + (f" g={label[0]}" if label[1] == "open" else ""))
    for v in {r["variant"] for r in result["ablations"].get("variants", {}).get("rows", [])}:
        pts = sorted((r["latent_mse"], r["bits_per_frame"]) for r in result["ablations"]["variants"]["rows"] if r["variant"] == v)
        ax.plot(*zip(*pts), "^:", label=f"ablation: {v} (g={HEADLINE_G})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent MSE vs E(x)")
    ax.set_ylabel("bits per frame")
    ax.set_title("Learned latent coding vs naive rounding + general-purpose compression")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(_save(fig, prefix, "naive", footer))
    # 6. where the bits go at g = 10
    bd = breakdown_plot(result, prefix, footer)
    return out + ([bd] if bd is not None else [])


# ----------------------------------------------------------------------------------------------------
# Where the bits go (sganc_stream.latent.breakdown, pooled over clips)

PART_NAMES = {"intra": "intra", "new_face": "new-face intra", "difference": "inter difference",
              "residual": "drift refresh (residual)"}


def headline_breakdowns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The pooled breakdowns of open loop at g = 10, by Δ."""
    return sorted((b for b in result.get("breakdown", []) if b["mode"] == "open" and b["g"] == str(HEADLINE_G)),
                  key=lambda b: b["step"])


def breakdown_markdown(result: dict[str, Any]) -> list[str]:
    """Tables: the file's bits by category and packet type at each Δ, by stage group, and by W+ row at the middle Δ."""
    bds = headline_breakdowns(result)
    if not bds:
        return []
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    lines = ["", f"**Where the bits go** (open loop, g = {HEADLINE_G}, all clips pooled; `sganc_stream.latent.breakdown`, "
             "the same as `sganc-stream inspect --json`: payload bits attributed to coded parts and W+ rows in proportion "
             "to −log2 p of each symbol, so every split sums exactly to the file):", "",
             "| Δ | file bits/frame | intra | new-face | inter difference | residual | packet framing | container | "
             "+ transport estimate |", "|---|---|---|---|---|---|---|---|---|"]
    for b in bds:
        n, parts = b["frames"], b["by_part"]
        cell = lambda bits: f"{bits / n:.0f} ({pct(bits / b['total_bits'])})"  # noqa: E731
        lines.append(f"| {b['step']:g} | {b['bits_per_frame']:.0f} ({b['kbps']:.1f} kbps) | "
                     + " | ".join(cell(parts[p]["bits"]) for p in PART_NAMES) + " | "
                     f"{cell(b['framing_bits'])} | {cell(b['container']['header_bits'] + b['container']['end_bits'])} | "
                     f"{b['transport']['bits'] / n:.0f} ({b['transport']['kbps']:.1f} kbps) |")
    lines += ["", "| Δ | packet type | packets | bits/packet (framing included) | share of the file |", "|---|---|---|---|---|"]
    for b in bds:
        for label, t in b["by_packet_type"].items():
            lines.append(f"| {b['step']:g} | {label} | {t['packets']} | {fmt(t['bits_per_packet'], '.0f')} | {pct(t['share'])} |")
    lines += ["", "| Δ | stage group (W+ rows) | bits/frame | share of the file | of which inter difference | "
              "of which residual |", "|---|---|---|---|---|---|"]
    for b in bds:
        for g in b["by_group"]:
            lines.append(f"| {b['step']:g} | {g['rows'][0]}–{g['rows'][1] - 1} | {g['bits'] / b['frames']:.0f} | "
                         f"{pct(g['share'])} | {pct(g['by_part']['difference'] / max(g['bits'], 1))} | "
                         f"{pct(g['by_part']['residual'] / max(g['bits'], 1))} |")
    mid = bds[len(bds) // 2]
    lines += ["", f"By W+ row at Δ = {mid['step']:g} (bits per frame):", "",
              "| row | bits/frame | share of the file | intra | inter difference | residual |", "|---|---|---|---|---|---|"]
    for r in mid["by_row"]:
        n = mid["frames"]
        lines.append(f"| {r['row']} | {r['bits'] / n:.0f} | {pct(r['share'])} | {r['by_part']['intra'] / n:.0f} | "
                     f"{r['by_part']['difference'] / n:.0f} | {r['by_part']['residual'] / n:.0f} |")
    return lines


def breakdown_plot(result: dict[str, Any], prefix: Path, footer: str) -> Path | None:
    """Left: the file's bits per frame by category at each Δ (g = 10); right: by W+ row and part at the middle Δ."""
    import matplotlib.pyplot as plt

    bds = headline_breakdowns(result)
    if not bds:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5))
    cats = [(PART_NAMES[p], lambda b, p=p: b["by_part"][p]["bits"]) for p in PART_NAMES]
    cats += [("packet framing", lambda b: b["framing_bits"]),
             ("container header + end", lambda b: b["container"]["header_bits"] + b["container"]["end_bits"]),
             ("transport estimate (not in the file)", lambda b: b["transport"]["bits"])]
    x = np.arange(len(bds))
    bottom = np.zeros(len(bds))
    for i, (name, get) in enumerate(cats):
        v = np.array([get(b) / b["frames"] for b in bds], dtype=np.float64)
        ax.bar(x, v, bottom=bottom, label=name, hatch="//" if "transport" in name else None,
               color=f"C{i}", alpha=0.5 if "transport" in name else 1.0)
        bottom += v
    ax.set_xticks(x, [f"Δ = {b['step']:g}\n{b['kbps']:.1f} kbps" for b in bds])
    ax.set_ylabel("bits per frame")
    ax.set_title(f"Where the bits go, open loop g = {HEADLINE_G} (all clips)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    mid = bds[len(bds) // 2]
    rows = np.arange(len(mid["by_row"]))
    bottom = np.zeros(len(rows))
    for i, p in enumerate(PART_NAMES):
        v = np.array([r["by_part"][p] / mid["frames"] for r in mid["by_row"]], dtype=np.float64)
        if v.any():
            bx.bar(rows, v, bottom=bottom, label=PART_NAMES[p], color=f"C{i}")
            bottom += v
    for g in mid["by_group"][1:]:
        bx.axvline(g["rows"][0] - 0.5, color="k", ls=":", lw=1)
    bx.set_xticks(rows)
    bx.set_xlabel("W+ row (dotted: stage group boundaries)")
    bx.set_ylabel("payload bits per frame")
    bx.set_title(f"By W+ row, Δ = {mid['step']:g}")
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, prefix, "breakdown", footer)


def _save(fig: Any, prefix: Path, what: str, footer: str = "") -> Path:
    import matplotlib.pyplot as plt

    if footer:
        fig.text(0.005, 0.003, footer, fontsize=5.5, color="0.4", ha="left", va="bottom")
    path = prefix.with_name(f"{prefix.name}_{what}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], name: str) -> list[Path]:
    csv_path = RESULTS / f"{name}.csv"
    write_csv(result, csv_path)
    md_path = RESULTS / f"{name}.md"
    md_path.write_text(markdown(result, name))
    return [csv_path, md_path, *plots(result, RESULTS / name)]


README_BEGIN, README_END = "<!-- bitrate_vs_g:begin -->", "<!-- bitrate_vs_g:end -->"


def update_readme(readme: Path, md: str) -> bool:
    """Replace the text between the README's bitrate_vs_g markers with ``md``; False when there are no markers."""
    text = readme.read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    readme.write_text(text[: a + len(README_BEGIN)] + "\n" + md.strip() + "\n" + text[b:])
    return True

