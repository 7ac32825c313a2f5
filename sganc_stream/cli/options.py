"""Coding options shared by every command that encodes: ``sganc-stream transcode/demo/latents`` and the live call;
and the runtime options (``--runtime --device --threads``) of ``decode`` and the live call.

One definition of ``--mode --g --step --keyframe-interval``, ``--residual-table``, ``--drift-damping
--rounding-offset`` (``auto`` by default: what the model's tables were fitted for) and ``--target-kbps`` (and, for commands that write files, ``--inter-context``; for latent files,
``--decimation``);
validation is :class:`StreamParams`' (one place), so ``--g 300`` is the same one-line error in every command, before
any model work or network set-up. :func:`check_runtime_arguments` is the one check of the runtime options.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

from sganc_stream.errors import InputError
from sganc_stream.bitstream.container import MAX_DECIMATION
from sganc_stream.latent.codec import (AUTO, CONTEXT_CHOICES, MODES, RESIDUAL_CHOICES, StreamParams,
                                       resolve_encoder_choices, resolve_residual)
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.quantize import ROUNDING_OFFSET
from sganc_stream.onnx_runtime import require_onnxruntime


def add_stream_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--mode``, ``--g``, ``--step`` and ``--keyframe-interval``."""
    p.add_argument("--mode", choices=MODES, default="open", help="inter coding mode (default: open, the paper's)")
    p.add_argument("--g", type=int, default=10, help="residual period in open mode; 0 = never (default: 10)")
    p.add_argument("--step", type=float, help="quantization step, one of the model's presets (default: the model's default step, else the "
                        "middle preset)")
    p.add_argument("--keyframe-interval", type=int, default=0,
                   help="intra refresh period in frames; 0 = the first frame and on request only (default: 0)")


def add_residual_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--residual-table`` (files, and the call: its hello names the table, SPEC §8.4). ``auto``, the default, is
    resolved once the model is loaded (:func:`stream_params_from`)."""
    p.add_argument("--residual-table", choices=RESIDUAL_CHOICES, default=AUTO,
                   help="residual table in open mode: auto (default) is empirical when the model has an empirical "
                        "table for --g (the shipped model: g = 1, 2, 5, 10, 20, 40, 80; `inspect MODEL` lists a "
                        "model's), else irwin_hall (closed and intra modes, g = 0, other periods); irwin_hall is the "
                        "paper's law, nothing stored; empirical is the model's histogram of training residuals, for "
                        "the periods g it was fitted for (bitstream v3, or v4–v6 with --target-kbps or temporal "
                        "context)")


def add_context_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--inter-context`` (file streams only: the call protocol's header has no such field) and the encoder
    options (:func:`add_encoder_arguments`)."""
    p.add_argument("--inter-context", choices=CONTEXT_CHOICES, default=AUTO,
                   help="how inter differences are coded: auto (default) is temporal when the model has "
                        "temporal-context tables (the shipped model does) and the mode codes differences, else "
                        "factorized; factorized is one table per channel, the paper's; temporal chooses each channel's "
                        "table by its previous decoded difference (needs a model with temporal-context tables, e.g. "
                        "from fit-context-tables; writes bitstream v5, v6 with --target-kbps)")
    add_encoder_arguments(p)


def add_encoder_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--drift-damping`` and ``--rounding-offset``: encoder choices that change no bitstream field (files and
    the call alike)."""
    p.add_argument("--drift-damping", type=_auto_or_number, default=AUTO, metavar="A",
                   help="open mode: each latent difference also corrects a share A (0 … 1) of the drift so far "
                        "(0: the paper's open loop; 1: closed loop with residuals); auto (default) is the damping the "
                        "model's tables were fitted for (the shipped model: 0.5; `inspect MODEL` shows it), else 0; "
                        "changes no bitstream field")
    p.add_argument("--rounding-offset", type=_auto_or_number, default=AUTO, metavar="F",
                   help="quantizer of latent differences: sign(x)·floor(|x| + F) in steps (0 … 0.5); 0.5 rounds to "
                        "nearest, less is a dead zone (1/6: H.264's inter offset) that sends more zeros; auto "
                        "(default) is the offset the model's tables were fitted for (the shipped model: 1/6), else "
                        "0.5; changes no bitstream field. auto never decimates: --decimation (latent files) stays "
                        "explicit")


def _auto_or_number(text: str) -> float | str:
    """argparse type of the encoder choices: ``auto`` (any case) or a number, a fraction such as ``1/6`` included;
    anything else is argparse's one-line usage error naming the option."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        try:
            return float(Fraction(text))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"expected auto or a number such as 0.5 or 1/6, got {text!r}") from None


def add_decimation_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--decimation`` (latent files only: the video pipeline codes every frame)."""
    p.add_argument("--decimation", type=int, default=1, metavar="D",
                   help=f"code every D-th frame (1 … {MAX_DECIMATION}); the decoder interpolates W+ in between "
                        "(writes bitstream v5, v6 with --target-kbps; default: 1, every frame)")


def add_rate_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--target-kbps`` (rate control, bitstream v4, v6 with temporal context or decimation: files, and the call,
    whose hello carries a v4 header)."""
    p.add_argument("--target-kbps", type=float, metavar="K",
                   help="rate control: choose the quantization step per group of frames (g frames in open mode, 10 "
                        "otherwise) among the model's presets so the packet rate (payload + framing) keeps K kbit/s; "
                        "a bitstream v4 stream (v6 with temporal context or decimation); excludes --step")


def check_stream_arguments(args: argparse.Namespace) -> None:
    """Validate all but ``--step`` (a preset of the model) before a model is loaded: StreamParams with step index 0
    (``--residual-table auto`` stands for Irwin–Hall here, valid in every mode; the model decides it later)."""
    context, damping, offset = _encoder(args, None)
    StreamParams(args.mode, args.g, 0, args.keyframe_interval, _residual(args, None), _target(args),
                 inter_context=context, decimation=_decimation(args), damping=damping, rounding_offset=offset)
    if _target(args) is not None and args.step is not None:
        raise InputError("--step and --target-kbps exclude each other: rate control chooses the step")


def stream_params_from(args: argparse.Namespace, codec: LatentCodecModel) -> StreamParams:
    """The validated StreamParams of parsed arguments (InputError, one line, for a bad value), ``--residual-table
    auto`` resolved against ``codec`` (:func:`~sganc_stream.latent.codec.resolve_residual`): the returned residual
    table is always a concrete one. With ``--target-kbps`` the stream's unit step is the model's finest preset and the
    steps are every preset that is a multiple of it."""
    check_stream_arguments(args)
    target = _target(args)
    step = codec.step_index(min(codec.steps) if target is not None else args.step)
    context, damping, offset = _encoder(args, codec)
    params = StreamParams(args.mode, args.g, step, args.keyframe_interval, _residual(args, codec), target,
                          inter_context=context, decimation=_decimation(args), damping=damping, rounding_offset=offset)
    params.check_model(codec)
    return params


def _target(args: argparse.Namespace) -> float | None:
    """``--target-kbps``; commands without the option (``sganc-recv``) code at a fixed step."""
    return getattr(args, "target_kbps", None)


def _encoder(args: argparse.Namespace, codec: LatentCodecModel | None) -> tuple[str, float, float]:
    """``--inter-context``, ``--drift-damping`` and ``--rounding-offset``, ``auto`` resolved against ``codec``
    (:func:`~sganc_stream.latent.codec.resolve_encoder_choices`). The call has no ``--inter-context`` (its headers
    cannot name one): factorized; commands without the encoder options (``sganc-recv``) code the paper's open loop
    and round to nearest."""
    return resolve_encoder_choices(getattr(args, "inter_context", "factorized"), getattr(args, "drift_damping", 0.0),
                                   getattr(args, "rounding_offset", ROUNDING_OFFSET), args.mode, codec)


def _decimation(args: argparse.Namespace) -> int:
    """``--decimation``; commands without it code every frame."""
    return getattr(args, "decimation", 1)


def _residual(args: argparse.Namespace, codec: LatentCodecModel | None) -> str:
    """``--residual-table``, ``auto`` resolved against ``codec`` (None: before it is loaded, Irwin–Hall); commands
    that send nothing (``sganc-recv``) have none: Irwin–Hall."""
    return resolve_residual(getattr(args, "residual_table", "irwin_hall"), args.mode, args.g, codec)


def check_runtime_arguments(args: argparse.Namespace) -> None:
    """``--runtime`` (torch or onnx), ``--device``, ``--threads`` and (the call's) ``--encoder-precision`` together,
    before any model is loaded: ONNX Runtime runs on the CPU only and must be installed, int8 E needs it, and every
    runtime needs at least one thread (InputError, one line)."""
    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.runtime == "onnx" and args.device != "cpu":
        raise InputError(f"--runtime onnx runs on the CPU (--device {args.device} needs --runtime torch)")
    if getattr(args, "encoder_precision", None) == "int8" and args.runtime != "onnx":
        raise InputError("--encoder-precision int8 needs --runtime onnx (PyTorch runs E in float32)")
    if args.runtime == "onnx":
        require_onnxruntime()


def encoder_precision(args: argparse.Namespace) -> str:
    """E's precision for a process that encodes: the call's ``--encoder-precision`` if given, else int8 with
    ``--runtime onnx`` and fp32 with torch (:mod:`sganc_stream.onnx_quantize` says what int8 costs and buys)."""
    chosen = getattr(args, "encoder_precision", None)
    return str(chosen) if chosen else ("int8" if args.runtime == "onnx" else "fp32")
