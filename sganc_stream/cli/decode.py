"""`sganc-stream decode`: regenerate the video of an .sgnc file; and the model options every video command shares.

This module imports nothing heavy when the parser is built, so that ``decode --runtime onnx`` runs in a process that
never imports torch (the CLI builds only this command's parser for ``decode``: :data:`sganc_stream.cli.LIGHT_COMMANDS`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sganc_stream.assets import default_face_model
from sganc_stream.bitstream.container import read_container
from sganc_stream.cli.options import check_runtime_arguments, encoder_precision
from sganc_stream.decoding import decode_file
from sganc_stream.onnx_runtime import ONNX_EXTRA, RUNTIMES, OnnxFaceModel, load_onnx_face_model
from sganc_stream.threads import DEFAULT_THREADS, set_threads
from sganc_stream.video import VIDEO_FORMATS, video_format

if TYPE_CHECKING:
    from sganc_stream.pipeline import FaceModel


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="face model bundle (default: the embedded face model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per network call (default 1; use the same value to decode a file exactly as transcode did)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"CPU threads for G and E (default {DEFAULT_THREADS}: the models are small, and extra "
                        "threads slow them down on a busy machine)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, and no line when a first use exports or quantizes the model's ONNX graphs")


def load_model(args: argparse.Namespace, device: str | None = None) -> FaceModel:
    """The face model of ``--model`` on ``device`` (default ``--device``), run with ``--threads`` torch threads."""
    from sganc_stream.pipeline import load_face_model

    set_threads(args.threads)
    return load_face_model(args.model or default_face_model(), device or args.device)


def load_runtime_model(args: argparse.Namespace, *, encode: bool = False,
                       stream_model_id: str | None = None) -> FaceModel | OnnxFaceModel:
    """The model ``decode`` and the live call run: PyTorch (:func:`load_model`) or, with ``--runtime onnx``, ONNX
    Runtime (no torch import; ``encode``: with E's graph too, in :func:`~sganc_stream.cli.options.encoder_precision`;
    ``stream_model_id``: the stream to decode was made with this model, checked before a first run exports the
    graphs). Options checked by :func:`sganc_stream.cli.options.check_runtime_arguments` first."""
    check_runtime_arguments(args)
    if args.runtime == "torch":
        return load_model(args)
    return load_onnx_face_model(args.model or default_face_model(), threads=args.threads, quiet=args.quiet,
                                encode=encode, stream_model_id=stream_model_id,
                                encoder_precision=encoder_precision(args) if encode else "fp32")


def cmd_decode(args: argparse.Namespace) -> int:
    video_format(args.output, args.lossless)  # before any work
    check_runtime_arguments(args)
    # a stream of another model: one line before a first ONNX export; a file cut short: its complete frames, a warning
    container = read_container(args.input, partial=True)
    model = load_runtime_model(args, stream_model_id=container.header.model_id)
    info = decode_file(model, args.input, args.output, lossless=args.lossless, batch=args.batch, progress=not args.quiet,
                       container=container)
    no_face = f", {info['no_face_frames']} of them without a face (black)" if info["no_face_frames"] else ""
    print(f"{args.output}: {info['frames']} frames at {info['fps']:g} fps decoded{no_face} "
          f"({info['decode_fps']:.1f} frames/s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="regenerate the video of an .sgnc file",
                       description="Decode IN.sgnc with the model it was made with (the model id must match). A file "
                                   "cut short (no end packet) gives its complete frames and a warning. On the same "
                                   "machine with the same --device, --batch and --runtime the frames equal "
                                   "transcode --recon's (which runs PyTorch).")
    add_model_options(p)
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="torch: PyTorch, the reference (default); onnx: T⁻¹ and G in ONNX Runtime on the CPU, without "
                        "importing torch (less memory, faster start; pixels within a few levels of torch's; the graphs "
                        "are exported from the bundle with torch on first use and cached in $SGANC_CACHE_DIR, else "
                        f"$XDG_CACHE_HOME/sganc-stream, else ~/.cache/sganc-stream; {ONNX_EXTRA})")
    p.add_argument("--lossless", action="store_true", help="write the video bit-exactly (see transcode --lossless)")
    p.add_argument("input", type=Path, metavar="IN.sgnc")
    p.add_argument("output", type=Path, metavar="OUT.mp4",
                   help=f"the video, in the format its suffix names ({', '.join(VIDEO_FORMATS)})")
    p.set_defaults(func=cmd_decode)
