"""`sganc-stream latents encode|decode|demo` and `sganc-stream inspect`: the latent codec on .npy files."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sganc_stream.assets import default_face_model, default_latent_codec
from sganc_stream.bitstream.container import (FPS_MAX, FPS_MIN, Container, decode_container, fps_in_range, read_container,
                                              switches_steps)
from sganc_stream.cli.options import (add_context_argument, add_decimation_argument, add_rate_argument, add_residual_argument,
                                      add_stream_arguments, stream_params_from)
from sganc_stream.bitstream.packet import naming_packet
from sganc_stream.entropy.rans import peek_choice
from sganc_stream.errors import InputError
from sganc_stream.fileio import check_stream_output, check_writable, load_npy, write_bytes_atomic, write_npy_atomic
from sganc_stream.latent.breakdown import bit_breakdown
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import LatentCodecModel, default_preset, load_latent_codec
from sganc_stream.latent.sequence import (decode_sequence, encode_sequence, interpolated_frames, no_face_frames, stream_params,
                                         time_coding)
from sganc_stream.latent.synthetic import synthetic_latents


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """Coding options shared by every command that encodes."""
    p.add_argument("--model", help="model bundle or latent codec file (default: the shipped model)")
    add_stream_arguments(p)
    add_residual_argument(p)
    add_context_argument(p)
    add_decimation_argument(p)
    add_rate_argument(p)
    p.add_argument("--fps", type=float, default=25.0, help="frame rate recorded in the header (default: 25)")


def resolve_params(model: LatentCodecModel, args: argparse.Namespace) -> StreamParams:
    if not fps_in_range(args.fps):
        raise InputError(f"--fps must be in [{FPS_MIN:g}, {FPS_MAX:g}]")
    return stream_params_from(args, model)


def load_model(path: str | None) -> LatentCodecModel:
    return load_latent_codec(path or default_latent_codec())




def cmd_encode(args: argparse.Namespace) -> int:
    check_stream_output(args.output)  # before any work
    if args.recon:
        check_writable(args.recon)
    model = load_model(args.model)
    latents = load_npy(args.input)
    res = encode_sequence(model, latents, resolve_params(model, args), args.fps)
    if args.recon:
        write_npy_atomic(args.recon, res.recon)
    write_bytes_atomic(args.output, res.data)
    n = len(res.frame_types)
    vs_ideal = (f", rANS {100 * (sum(res.payload_bits) / sum(res.ideal_bits) - 1):+.2f}% vs ideal (check values "
                "included)" if sum(res.ideal_bits) else "")
    print(f"{n} frames, {len(res.data)} bytes, {8 * len(res.data) / n:.0f} bits/frame, "
          f"{8 * len(res.data) / n * args.fps / 1000:.2f} kbps at {args.fps:g} fps{vs_ideal}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    container = read_container(args.input, partial=True)  # a file cut short: its complete frames, a warning
    model = load_model(args.model) if args.model else (shipped_model_of(container) or load_model(None))
    stream_params(model, container.header)  # model check before any work
    latents = decode_sequence(model, container)
    write_npy_atomic(args.output, latents)
    empty = int(no_face_frames(latents).sum())
    between = len(interpolated_frames(container))
    print(f"{len(latents)} frames decoded to {args.output}"
          + (f" ({empty} without a face: all-NaN frames)" if empty else "")
          + (f" ({between} interpolated: decimation {container.header.decimation}; `inspect --json` lists them)"
             if between else ""))
    return 0


def shipped_model_of(container: Container) -> LatentCodecModel | None:
    """The latent codec of whichever shipped model made a stream (the embedded face model or the synthetic latent
    codec), else None."""
    for candidate in (default_face_model, default_latent_codec):
        model = load_latent_codec(candidate())
        if model.model_id == container.header.model_id:
            return model
    return None


def breakdown_model(container: Container, path: str | None) -> LatentCodecModel | None:
    """The latent codec to split a stream's payload by part, group and row: ``--model`` (an error if it is not the
    stream's), else whichever shipped model made the stream, else None (packet types and framing only)."""
    return load_model(path) if path is not None else shipped_model_of(container)


def inspect_dict(path: str, model_path: str | None = None) -> dict:
    c = read_container(path, partial=True)
    frames = [{"index": p.frame, "type": p.type.label, "bytes": b, "payload_bytes": len(p.payload)} for p, b in zip(c.packets, c.record_bytes)]
    h = c.header
    steps_used: dict[str, int] | None = None
    if switches_steps(h.version):  # rate control: each face packet names its step (SPEC §4)
        for f, p in zip(frames, c.packets):
            if p.type.is_frame and p.payload:  # a v6 repeat has no payload and names no step (SPEC §4.3)
                with naming_packet(p, c.source):
                    f["step"] = h.steps[peek_choice(p.payload, len(h.steps))]
        steps_used = dict(Counter(format(f["step"], "g") for f in frames if "step" in f))
    header = {"version": h.version, "model_id": h.model_id, "rows": h.rows, "width": h.width, "mode": h.mode,
              "g": h.g, "step": h.step, "fps": h.fps, "frames": h.frames, "keyframe_interval": h.keyframe_interval,
              "residual": h.residual, "steps": list(h.steps), "context": h.context, "decimation": h.decimation}
    per_frame = np.array([f["bytes"] for f in frames], dtype=np.float64)
    model = breakdown_model(c, model_path)
    breakdown = bit_breakdown(c, model, transport=True).to_dict()
    if model is None:
        breakdown["by_row_note"] = "no shipped model made this stream: pass its bundle with --model for parts, groups and rows"
    return {
        "header": header,
        "header_bytes": c.header_bytes,
        "frames": frames,
        "total_bytes": c.total_bytes,
        "complete": c.complete,  # False: the file ends before its end packet (frames: its complete packets)
        "bits_per_frame": {"mean": float(8 * per_frame.mean()), "p95": float(8 * np.percentile(per_frame, 95))} if frames else None,
        "kbps": 8 * c.total_bytes / max(len(frames), 1) * h.fps / 1000,
        "breakdown": breakdown,
        "interpolated_frames": interpolated_frames(c),  # decoded frames the decoder interpolates (decimation)
        "steps_used": steps_used,  # rate-controlled streams: face packets per step; else None (every packet: "step")
    }


def print_breakdown(b: dict) -> None:
    """The breakdown's packet types, parts and groups as a few lines (per-row figures: --json)."""
    pct = lambda share: f"{100 * share:5.1f} %"  # noqa: E731
    print(f"where the bits go ({b['total_bits']} bits; payload attributed to parts and rows by -log2 p):")
    print(f"  container header + end  {b['container']['header_bits'] + b['container']['end_bits']:10d}  "
          f"{pct(b['container']['share'])}")
    for label, t in b["by_packet_type"].items():
        print(f"  {label:15s} x{t['packets']:<6d} {t['record_bits']:10d}  {pct(t['share'])}  "
              f"({t['bits_per_packet']:.0f} bits/packet, framing included)")
    print(f"    of which packet framing {b['framing_bits']:8d}  {pct(b['framing_share'])}")
    for part, v in b.get("by_part", {}).items():
        if v["bits"]:
            print(f"  part {part:18s} {v['bits']:10d}  {pct(v['share'])}")
    for g in b.get("by_group", []):
        print(f"  rows {g['rows'][0]:2d}-{g['rows'][1] - 1:<2d} (stage group) {g['bits']:10d}  {pct(g['share'])}")
    if "transport" in b:
        print(f"  + data-channel transport estimate {b['transport']['bits']} bits ({b['transport']['kbps']:.2f} kbps)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def bundle_line(path: Path, model_id: str) -> str:
    """What the commands that write a bundle print: its path, id, size and what it can do."""
    from sganc_stream.bundle import bundle_config, usage

    return f"{path}: model id {model_id} ({_mb(path.stat().st_size)}); {usage(bundle_config(path))}"


def print_bundle(info: dict) -> None:
    print(f"{info['file']}: sganc-stream bundle, model id {info['model_id']} ({_mb(info['file_bytes'])})")
    for name, part in info["parts"].items():
        cfg = part.get("config") or {}
        if name == "generator":
            what = (f"StyleGAN2 {cfg.get('size')} px, W+ {cfg.get('rows')}x{cfg.get('width')}, "
                    f"channel multiplier {cfg.get('channel_multiplier')}")
        elif name == "encoder":
            what = f"{cfg.get('type')} encoder, input {cfg.get('input_size')} px, id {str(part.get('encoder_id'))[:12]}…"
        elif name == "codec":
            trained = part.get("trained_for_encoder")
            steps = cfg.get("steps", [])
            extras = [f"default step {default_preset(steps, cfg.get('default_step')):g}"] if steps else []
            if cfg.get("context_classes"):
                extras.append(f"temporal-context tables ({cfg['context_classes']} classes)")
            if cfg.get("empirical_residual_g"):
                extras.append(f"empirical residual tables (g {', '.join(map(str, cfg['empirical_residual_g']))})")
            enc = cfg.get("tables_encoder")
            if isinstance(enc, dict):  # written by fit-context-tables
                num = lambda x: f"{x:.4g}" if isinstance(x, (int, float)) else str(x)  # noqa: E731 (any file)
                extras.append("tables fitted for " + " ".join(
                    f"--{k.replace('_', '-')} {num(enc.get(k))}"
                    for k in ("mode", "g", "drift_damping", "rounding_offset", "decimation")))
            what = (f"latent codec {cfg.get('rows')}x{cfg.get('width')}, groups {cfg.get('groups')}, steps "
                    f"{'/'.join(format(s, 'g') for s in steps)}"
                    f"{''.join(', ' + e for e in extras)}; "
                    + (f"trained for encoder {trained[:12]}…: {part.get('fit')}" if trained
                       else "the encoder it was trained for is not recorded"))
        else:
            what = "part not used by this version"
        print(f"  {name:<9} {what}; {part['parameters'] / 1e6:.2f} M values, {_mb(part['bytes'])} ({_mb(part['stored_bytes'])} stored) "
              f"{'/'.join(part['dtypes'])}")
    print(f"  licence   {info['licence'] or '(none stated)'}")
    print(f"  use       {info['use']}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from sganc_stream.assets import default_face_model
    from sganc_stream.bundle import bundle_info, is_bundle_file

    if args.input is None:
        args.input = str(default_face_model())
    if is_bundle_file(args.input):
        info = bundle_info(args.input)
        if args.json:
            print(json.dumps(info, indent=1))
        else:
            print_bundle(info)
        return 0
    info = inspect_dict(args.input, args.model)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    h = info["header"]
    print(f"{args.input}: bitstream v{h['version']}, model {h['model_id']}, {h['rows']}x{h['width']}, mode {h['mode']}, "
          f"g={h['g']}, step={h['step']:g}, {h['fps']:g} fps, {h['frames']} frames, keyframe interval {h['keyframe_interval']}, "
          f"residual table {h['residual']}" + (f", rate-controlled among steps {', '.join(f'{x:g}' for x in h['steps'])}"
                                               if h["steps"] else "")
          + (f", inter context {h['context']}" if h["context"] != "factorized" else "")
          + (f", decimation {h['decimation']} ({len(info['interpolated_frames'])} frames interpolated)"
             if h["decimation"] > 1 else ""))
    for f in info["frames"]:
        step = f"  step {f['step']:g}" if "step" in f else ""
        print(f"  frame {f['index']:6d}  {f['type']:15s} {f['bytes']:8d} bytes{step}")
    bpf = info["bits_per_frame"] or {"mean": 0, "p95": 0}
    print(f"total {info['total_bytes']} bytes (header {info['header_bytes']}), {bpf['mean']:.0f} bits/frame mean, "
          f"{bpf['p95']:.0f} p95, {info['kbps']:.2f} kbps")
    if not info["complete"]:
        tail = info["total_bytes"] - info["header_bytes"] - sum(f["bytes"] for f in info["frames"])
        print(f"file cut short: no end packet, {tail} bytes of a partial last record (counted as container bytes)")
    if info["steps_used"]:
        print("face packets per step: " + ", ".join(f"{n} at {s}" for s, n in info["steps_used"].items()))
    print_breakdown(info["breakdown"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic smooth sequence → encode → decode → check and print the figures."""
    model = load_model(args.model)
    latents = synthetic_latents("smooth", args.frames, model.rows, model.width, seed=args.seed)
    params = resolve_params(model, args)
    res = encode_sequence(model, latents, params, args.fps)
    t0 = time.perf_counter()
    decoded = decode_sequence(model, decode_container(res.data))
    exact = bool(np.array_equal(decoded, res.recon))
    speed = time_coding(model, latents, params)
    mse = float(np.mean((decoded - latents) ** 2))
    n = len(latents)
    print(f"latent-codec demo: {n} synthetic {model.rows}x{model.width} frames, mode {params.mode}, g={params.g}, "
          f"step={model.steps[params.step_index]:g}")
    print(f"  {len(res.data)} bytes = {8 * len(res.data) / n:.0f} bits/frame = {8 * len(res.data) / n * args.fps / 1000:.2f} kbps at {args.fps:g} fps")
    print(f"  rANS payload vs model ideal: {100 * (sum(res.payload_bits) / sum(res.ideal_bits) - 1):+.3f}%")
    print(f"  latent MSE {mse:.3e}; decoder output equals encoder reconstruction: {exact}")
    print(f"  per frame (median): encode {speed['encode_ms']:.1f} ms, decode {speed['decode_ms']:.1f} ms "
          f"(whole file decode {1e3 * (time.perf_counter() - t0) / n:.1f} ms/frame)")
    return 0 if exact else 1


def cmd_synth(args: argparse.Namespace) -> int:
    """Write synthetic sequences (the default codec's training data; also handy for tests)."""
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        kind = args.kind if args.kind != "mixed" else ("smooth", "walk")[i % 2]
        write_npy_atomic(str(out / f"{kind}_{i:03d}.npy"), synthetic_latents(kind, args.frames, args.rows, args.width, seed=args.seed + i))
    print(f"{args.count} sequences of ({args.frames}, {args.rows}, {args.width}) written to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lat = sub.add_parser("latents", help="code W+ latent sequences (.npy, (frames, rows, width))")
    lsub = lat.add_subparsers(dest="latents_command", required=True, metavar="ACTION")

    p = lsub.add_parser("encode", help="encode IN.npy into OUT.sgnc")
    add_stream_options(p)
    p.add_argument("--recon", help="also write the encoder's own W+ reconstruction (.npy)")
    p.add_argument("input", metavar="IN.npy")
    p.add_argument("output", metavar="OUT.sgnc")
    p.set_defaults(func=cmd_encode)

    p = lsub.add_parser("decode", help="decode IN.sgnc into OUT.npy (float32, (frames, rows, width))")
    p.add_argument("--model", help="model bundle or latent codec file (default: the shipped model that made the "
                                   "stream: the embedded face model or the synthetic latent codec)")
    p.add_argument("input", metavar="IN.sgnc")
    p.add_argument("output", metavar="OUT.npy")
    p.set_defaults(func=cmd_decode)

    p = lsub.add_parser("demo", help="encode and decode a synthetic sequence and print rate, exactness and speed")
    add_stream_options(p)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = lsub.add_parser("synth", help="write synthetic smooth / random-walk latent sequences")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--kind", choices=["smooth", "walk", "mixed"], default="mixed")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--rows", type=int, default=18)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--seed", type=int, default=1000)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("inspect", help="show an .sgnc file's header and frame sizes, or a bundle's model id and parts",
                       description="For a stream: its header (with the id of the model it was made with), per-frame "
                                   "sizes, and where the bits go (packet types, framing, container; with the stream's "
                                   "model also coded parts, stage groups and W+ rows). For a bundle: its model id (what streams carry), parts with sizes, the "
                                   "encoder its codec was trained for, licence and what it can do.")
    p.add_argument("input", metavar="FILE", nargs="?",
                   help=".sgnc stream or .safetensors bundle (default: the embedded default face model)")
    p.add_argument("--json", action="store_true", help="machine-readable output (with the per-row breakdown)")
    p.add_argument("--model", help="the stream's model bundle, for the breakdown by part, stage group and W+ row "
                                   "(default: the shipped model that made it, if any)")
    p.set_defaults(func=cmd_inspect)
