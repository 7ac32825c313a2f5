"""`sganc-stream transcode | transcode-dataset`: face video → .sgnc through the streaming pipeline (`decode` is in
:mod:`sganc_stream.cli.decode`)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from sganc_stream.cli.decode import add_model_options, load_model
from sganc_stream.cli.options import (add_context_argument, add_rate_argument, add_residual_argument, add_stream_arguments, check_stream_arguments,
                                      stream_params_from)
from sganc_stream.dataset import LAYOUTS, Clip, scan_clips, transcode_dataset
from sganc_stream.engine import ENGINES, RAY_EXTRA, EngineOptions
from sganc_stream.errors import InputError
from sganc_stream.metrics import IDENTITY_EVERY
from sganc_stream.latent.codec import resolve_residual
from sganc_stream.latent.quantize import ROUNDING_OFFSET

# The pipeline (torch) is imported by the commands that run it, so that `sganc-stream --help` loads no torch.
if TYPE_CHECKING:
    from sganc_stream.pipeline import FaceModel, TranscodeOptions
    from sganc_stream.refine import RefineOptions


def add_coding_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that encode video."""
    add_model_options(p)
    add_stream_arguments(p)
    add_residual_argument(p)
    add_context_argument(p)
    add_rate_argument(p)
    p.add_argument("--max-frames", type=int, help="code at most this many input frames")
    p.add_argument("--identity-every", type=int, default=IDENTITY_EVERY,
                   help=f"in the quality report (transcode --report, demo), identity distance on every N-th frame "
                        f"(about 0.1 s a pair on CPU; default {IDENTITY_EVERY})")
    p.add_argument("--lossless", action="store_true",
                   help="write the output videos (--recon, --aligned; demo's videos) bit-exactly (.mp4/.mkv/.mov: "
                        "libx264rgb qp 0; .webm: VP9 lossless; .png is "
                        "always exact; not .gif) instead of H.264 crf 18 / VP9 crf 32")
    p.add_argument("--pre-aligned", action="store_true", help="input frames already are FFHQ-aligned faces (no alignment)")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="quality mode, offline: refine each frame's W+ by STEPS gradient-descent steps on reconstruction "
                        "+ identity loss, each frame pulled toward the previous one (default 0: off; see README)")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Where per-clip work runs (sganc_stream.engine): this process or a Ray cluster."""
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help=f"local: this process, one clip after another; ray: a pool of Ray workers ({RAY_EXTRA})")
    p.add_argument("--address", help="ray: join this cluster ('auto' or HOST:PORT); default: start Ray on this machine")
    p.add_argument("--workers", type=int, help="ray: number of workers (default: as many as the cluster holds)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="ray: CPUs reserved per worker; torch runs floor(C) threads in it (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="ray: GPUs reserved per worker, fractions share one (needs --device cuda; default 0)")


def engine_from(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(args.engine, args.address, args.workers, args.cpus_per_worker, args.gpus_per_worker,
                         args.device)


def check_coding_options(args: argparse.Namespace) -> RefineOptions | None:
    """Validate what needs no model (one line, InputError) before it is loaded; the refinement options or None."""
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if args.identity_every < 1:
        raise InputError(f"--identity-every must be at least 1, got {args.identity_every}")
    check_stream_arguments(args)
    if not args.refine:
        return None
    from sganc_stream.refine import RefineOptions

    return RefineOptions(args.refine)


def options_from(args: argparse.Namespace, model: FaceModel, **outputs: Any) -> TranscodeOptions:
    from sganc_stream.pipeline import TranscodeOptions

    refine = check_coding_options(args)
    return TranscodeOptions(params=stream_params_from(args, model.codec), lossless=args.lossless, refine=refine,
                            align=not args.pre_aligned, batch=args.batch, max_frames=args.max_frames, identity_every=args.identity_every,
                            progress=not args.quiet, **outputs)


def encoder_words(stream: dict[str, Any]) -> str:
    """The encoder choices of a report's stream section in the options' own words, e.g. ``'temporal context, drift
    damping 0.5, rounding offset 0.167'``; a record without them (older reports) counts as the paper's coding
    (factorized, no damping, rounding to nearest: offset 0.5)."""
    return (f"{stream.get('context', 'factorized')} context, drift damping {stream.get('drift_damping', 0.0):g}, "
            f"rounding offset {stream.get('rounding_offset', ROUNDING_OFFSET):.3g}")


def step_words(report: dict[str, Any]) -> str:
    """``'step Δ = 4'``; a rate-controlled stream: the steps its frames were coded at (``per_frame[i].step``), e.g.
    ``'steps Δ = 4 (30 frames), 8 (10) chosen by rate control'``."""
    steps = [f["step"] for f in report["per_frame"] if f.get("step") is not None]
    if not report["stream"].get("steps") or not steps:
        return f"step Δ = {report['stream']['step']:g}"
    counts = sorted(Counter(steps).items())
    used = ", ".join(f"{s:g} ({n}{' frames' if k == 0 else ''})" for k, (s, n) in enumerate(counts))
    return f"steps Δ = {used} chosen by rate control"


def describe(report: dict[str, Any]) -> str:
    """One line of figures for the terminal."""
    line = (f"{report['frames']} frames, {report['bytes']} bytes, {report['kbps']:.2f} kbps at {report['fps']:g} fps "
            f"and {step_words(report)} ({encoder_words(report['stream'])}), "
            f"{report['bits_per_frame']['mean']:.0f} bits/frame (p95 {report['bits_per_frame']['p95']:.0f})")
    refine = report["stream"].get("refine")
    if refine:
        line += f"; quality mode: W+ refined by {refine['steps']} steps a frame (--refine)"
    q = (report.get("quality") or {}).get("vs_aligned")
    if q:
        fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
        every = "" if q["identity_every"] == 1 else f" (on 1 frame in {q['identity_every']})"
        line += (f"; vs aligned input at {report['quality']['size']} px: PSNR {fmt(q['psnr'], '.2f')} dB, "
                 f"MS-SSIM {fmt(q['ms_ssim'], '.4f')}, identity {fmt(q['identity_distance'], '.3f')}{every}")
        skin = q.get("skin")
        if skin:
            line += (f"; skin ΔE*ab {skin['delta_e76']:.1f} (ΔL* {skin['delta_l']:+.1f}, ΔC* {skin['delta_chroma']:+.1f}, "
                     f"ΔH* {skin['delta_hue']:.1f}), shading contrast {fmt(skin['contrast_ratio'], '.2f')}x")
    align = report.get("alignment") or {}
    if (align.get("upscale") or 0) > 1:
        line += (f"; faces about {align['source_face_px']['median']:.0f} px in the input, enlarged "
                 f"{align['upscale']:.2f}x to the encoder's {align['size']} px")
    return line


def cmd_transcode(args: argparse.Namespace) -> int:
    from sganc_stream.pipeline import TranscodeOptions, check_outputs, transcode_file

    paste = args.output.with_suffix(".pasted.mp4") if args.paste_back else None
    outputs = {"recon": args.recon, "aligned": args.aligned, "report": args.report, "paste_back": paste}
    check_outputs(args.output, TranscodeOptions(lossless=args.lossless, **outputs))  # before any work
    check_coding_options(args)
    model = load_model(args)
    options = options_from(args, model, **outputs)
    report = transcode_file(model, args.input, args.output, options)
    print(f"{args.output}: {describe(report)}")
    p = options.params
    unused_table = p.residual == "irwin_hall" and resolve_residual("auto", p.mode, p.g, model.codec) == "empirical"
    for line in face_notes(report) + rate_notes(report, args.target_kbps, unused_table):
        print(f"  {line}")
    return 0


def face_notes(report: dict[str, Any]) -> list[str]:
    """Lines on frames without a face and on changes of the coded person (none when neither happened)."""
    notes = []
    first, fps = report["first_face_frame"], report["fps"]
    if report["no_face_frames"]:
        start = f"; first face at frame {first} ({first / fps:.2f} s), recorded in the stream" if first else ""
        notes.append(f"{report['no_face_frames']} frames without a face sent as no-face packets (decoded black)"
                     f"{start}")
    if report["identity_changes"]:
        frames = [f["index"] for f in report["per_frame"] if f["type"] == "new_face"]
        notes.append(f"the coded person changes {report['identity_changes']} times (new-face intra frames at "
                     f"{', '.join(map(str, frames[:10]))}{'…' if len(frames) > 10 else ''})")
    return notes


def rate_notes(report: dict[str, Any], target_kbps: float | None, empirical_unused: bool = False) -> list[str]:
    """A line when rate control missed its target by more than 10 % (kbit/s at the clip's frame rate), with the reason
    the report shows: every face frame at the coarsest (finest) step used, or else the fixed costs of a short clip
    (container header, intra frame); over the target when Irwin–Hall residuals were asked for though the model has an
    empirical table for the period (``empirical_unused``), a hint at that table (whose cost shrinks with the step,
    where Irwin–Hall's does not)."""
    if target_kbps is None or abs(report["kbps"] - target_kbps) <= 0.1 * target_kbps:
        return []
    over = report["kbps"] > target_kbps
    steps = [f["step"] for f in report["per_frame"] if f.get("step") is not None]
    if steps and len(set(steps)) == 1:
        why = (f"every frame was coded at the {'coarsest' if over else 'finest'} step the controller could use "
               f"(Δ = {steps[0]:g}) and still {'overshot' if over else 'undershot'}")
    else:
        why = (f"over {len(report['per_frame'])} frames the fixed costs (container header, the first intra frame) and "
               "the controller's start weigh in; a longer clip comes closer")
    hint = ("; --residual-table empirical codes the residuals in fewer bits at coarse steps"
            if over and empirical_unused else "")
    return [f"rate control missed --target-kbps {target_kbps:g}: {report['kbps']:.2f} kbps: {why}{hint}"]


def cmd_dataset(args: argparse.Namespace) -> int:
    engine = engine_from(args)
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    check_coding_options(args)
    clips, unmatched = scan_clips(args.root, args.layout)  # the input tree is checked before the model is read
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f", … {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        print(f"{len(unmatched)} video file(s) under {args.root} fit no {args.layout} layout and are not coded "
              f"(listed in {args.outdir / 'summary.json'}): {shown}", file=sys.stderr)
    model = load_model(args, engine.driver_device())
    options = options_from(args, model, quality=not args.no_quality)

    def told(clip: Clip, status: str) -> None:
        if status.startswith("failed") or not args.quiet:
            tqdm.write(f"{clip.rel}: {status}", file=sys.stderr)

    summary = transcode_dataset(model, args.root, args.outdir, args.layout, options, limit=args.limit, on_clip=told,
                                engine=engine)
    kbps = "n/a" if summary["kbps"] is None else f"{summary['kbps']:.2f}"
    psnr = "n/a" if summary["psnr_vs_aligned"] is None else f"{summary['psnr_vs_aligned']:.2f} dB"
    print(f"{args.outdir}: {summary['done']}/{summary['clips']} clips done ({summary['this_run']['skipped']} already "
          f"done), {summary['failed']} failed; {summary['frames']} frames, {kbps} kbps, PSNR vs aligned {psnr}")
    return 1 if summary["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcode", help="encode a face video into .sgnc (and optionally its reconstruction and report)",
                       description="Align the face in every frame, encode it to W+, code the latents into OUT.sgnc. "
                                   "A frame without a face (before the first face or later) is coded as a no-face "
                                   "packet (a few bytes, decoded black), so the stream keeps one packet per frame; a "
                                   "clip without any face is an error.")
    add_coding_options(p)
    p.add_argument("--recon", type=Path, metavar="RECON.mp4", help="write the decoded frames (what `decode` gives)")
    p.add_argument("--aligned", type=Path, metavar="ALIGNED.mp4", help="write the aligned input crops")
    p.add_argument("--report", type=Path, metavar="REPORT.json", help="write rate, quality and speed figures")
    p.add_argument("--paste-back", action="store_true",
                   help="also write OUT.pasted.mp4: the input frames with the decoded face composited back")
    p.add_argument("input", type=Path, metavar="INPUT", help="video file or folder of images")
    p.add_argument("output", type=Path, metavar="OUT.sgnc")
    p.set_defaults(func=cmd_transcode)

    p = sub.add_parser("transcode-dataset", help="transcode a MEAD / FILMPAC / folder tree, resumably",
                       description="Transcode every clip of ROOT into OUTDIR (mirroring the tree): <clip>.sgnc, "
                                   "<clip>.report.json, then clips.csv and summary.json. Finished clips are skipped when "
                                   "run again with the same settings; failed ones are retried. Exit status 1 if any failed. "
                                   "With --engine ray, clips are spread over Ray workers (ROOT must be readable at the "
                                   "same path on every node; this process writes OUTDIR).")
    add_coding_options(p)
    add_engine_options(p)
    p.add_argument("--layout", choices=LAYOUTS, default="folder",
                   help="mead: <actor>/video/<view>/<emotion>/level_<k>/<nnn>.mp4 or flat MEAD names like "
                        "M030_front_angry_level3_001.mp4; filmpac: clips named like FP006734MD02; folder: every video "
                        "file (default). Video files fitting no layout are listed, not coded")
    p.add_argument("--limit", type=int, help="only the first N clips (sorted by path)")
    p.add_argument("--no-quality", action="store_true", help="rate only: skip decoding and quality metrics")
    p.add_argument("root", type=Path, metavar="ROOT")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.set_defaults(func=cmd_dataset)
