"""`sganc-stream demo`: the README's first command — a talking face through the codec, offline, in one go."""

from __future__ import annotations

import argparse
from pathlib import Path

from sganc_stream.cli.decode import load_model
from sganc_stream.cli.transcode import add_coding_options, check_coding_options, describe, face_notes, options_from
from sganc_stream.errors import InputError


def cmd_demo(args: argparse.Namespace) -> int:
    if args.input is not None and args.webcam is not None:
        raise InputError("give --input or --webcam, not both")
    check_coding_options(args)
    model = load_model(args)
    options = options_from(args, model)
    from sganc_stream.demo import run_demo  # torch: imported when the demo runs, not for --help

    report = run_demo(model, args.out, options, input=args.input, camera=args.webcam, frames=args.max_frames)
    source = args.input or (f"camera {args.webcam}" if args.webcam is not None else "the bundled public-domain clip")
    print(f"demo: {source} → {args.out}/demo.sgnc")
    print(f"  {describe(report)}")
    for line in face_notes(report):
        print(f"  {line}")
    q = report["quality"]["vs_projected"]
    print(f"  vs the uncoded projection G(E(x)): PSNR {q['psnr']:.2f} dB, MS-SSIM {q['ms_ssim']:.4f}"
          if q["psnr"] is not None else "  decoded frames equal the uncoded projection")
    print(f"  codec alone (align + E + coding, and decoding + G; not the quality metrics, paste-back or video "
          f"writing): encode {report['speed']['encode_fps']:.1f} frames/s, decode {report['speed']['decode_fps']:.1f} frames/s")
    print(f"  look at: {args.out}/side_by_side.mp4 (original | decoded face pasted back), "
          f"{args.out}/contact_sheet.png (rows of original | aligned input | decoded face | pasted back), "
          f"{args.out}/aligned_vs_decoded.mp4 (aligned input | decoded face, at the model's size); "
          f"report: {args.out}/report.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="code a short talking-face clip and write original | decoded side by side",
                       description="Without --input or --webcam the demo codes the bundled 4 s public-domain clip (a "
                                   "presidential address), so it runs offline right after installation: alignment, "
                                   "the codec and paste-back. Writes OUT/demo.sgnc, OUT/side_by_side.mp4 (original | "
                                   "decoded face pasted back), OUT/aligned_vs_decoded.mp4, OUT/contact_sheet.png and "
                                   "OUT/report.json and prints rate and quality.")
    add_coding_options(p)  # its --max-frames: default the whole clip, 100 frames from a camera
    p.add_argument("--input", help="a face video to code instead of the bundled clip")
    p.add_argument("--webcam", type=int, nargs="?", const=0, metavar="INDEX", help="code frames from a camera (default 0)")
    p.add_argument("--out", type=Path, default=Path("sganc-demo"), help="output folder (default ./sganc-demo)")
    p.set_defaults(func=cmd_demo)
