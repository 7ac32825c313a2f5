"""Coding options shared by every command that encodes: ``sganc-stream transcode/demo/latents`` and the live call.

One definition of ``--mode --g --step --keyframe-interval``; validation is :class:`StreamParams`' (one place), so
``--g 300`` is the same one-line error in every command, before any model work or network set-up.
"""

from __future__ import annotations

import argparse

from sganc_stream.latent.codec import MODES, StreamParams
from sganc_stream.latent.model import LatentCodecModel


def add_stream_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--mode``, ``--g``, ``--step`` and ``--keyframe-interval``."""
    p.add_argument("--mode", choices=MODES, default="open", help="inter coding mode (default: open, the paper's)")
    p.add_argument("--g", type=int, default=10, help="residual period in open mode; 0 = never (default: 10)")
    p.add_argument("--step", type=float, help="quantization step, one of the model's presets (default: the middle one)")
    p.add_argument("--keyframe-interval", type=int, default=0,
                   help="intra refresh period in frames; 0 = the first frame and on request only (default: 0)")


def check_stream_arguments(args: argparse.Namespace) -> None:
    """Validate all but ``--step`` (a preset of the model) before a model is loaded: StreamParams with step index 0."""
    StreamParams(args.mode, args.g, 0, args.keyframe_interval)


def stream_params_from(args: argparse.Namespace, codec: LatentCodecModel) -> StreamParams:
    """The validated StreamParams of parsed arguments (InputError, one line, for a bad value)."""
    return StreamParams(args.mode, args.g, codec.step_index(args.step), args.keyframe_interval)
