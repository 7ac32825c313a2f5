"""`sganc-stream train-latent-codec`: train T and the entropy models on latent sequences, then freeze."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from sganc_stream.errors import InputError


def add_codec_training_options(p: argparse.ArgumentParser) -> None:
    """Latent-codec training options, shared by train-latent-codec and complete-bundle."""
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lambda", dest="lam", type=float, default=100.0, help="distortion weight λ (rate + λ·MSE in W+)")
    p.add_argument("--batch", type=int, default=16, help="9-frame slices per step")
    p.add_argument("--groups", choices=["stage", "single"], default="stage",
                   help="three stage-specific groups (coarse, middle, fine W+ rows, as the paper) or one")
    p.add_argument("--hidden", type=int, default=64, help="hidden width of the coupling nets")
    p.add_argument("--no-flow", action="store_true", help="identity T (ablation)")
    p.add_argument("--step-presets", default="0.5,1,2", help="quantization steps frozen into the tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def train_codec(latents: list[Any], out: Path, args: argparse.Namespace, resume: bool,
                progress: bool = True) -> tuple[Any, str]:
    """Train a codec on ``latents`` (.npy files / folders) with the options of :func:`add_codec_training_options`.

    The encoder id recorded by encode-face-clips (``latents.json``) goes into the codec; returns (model, log phrase).
    """
    with warnings.catch_warnings():  # compressai scripts modules with the deprecated torch.jit at import
        warnings.simplefilter("ignore", FutureWarning)
        from sganc_stream.training.latent_codec import (TrainConfig, describe_history, load_latent_sequences,
                                                        train_latent_codec, training_history)
    from sganc_stream.training.latent_files import find_latent_files, latents_encoder_id

    if args.steps < 1 or args.batch < 1 or not args.lam > 0:
        raise InputError("--steps and --batch must be >= 1 and --lambda > 0")
    try:
        presets = [float(s) for s in args.step_presets.split(",")]
    except ValueError:
        raise InputError("--step-presets must be comma-separated numbers, e.g. 0.5,1,2") from None
    if not presets or any(p <= 0 for p in presets):
        raise InputError("--step-presets must be positive")
    encoder = latents_encoder_id(find_latent_files(latents))
    seqs = load_latent_sequences(latents)
    cfg = TrainConfig(steps=args.steps, lam=args.lam, batch=args.batch, groups=args.groups, hidden=args.hidden,
                      couplings=0 if args.no_flow else TrainConfig.couplings, step_presets=presets, seed=args.seed)
    model, _ = train_latent_codec(seqs, out, cfg, device=args.device, resume=resume, progress=progress,
                                  info={"encoder_id": encoder} if encoder else None)
    fit = f"for encoder {encoder[:12]}…" if encoder else "encoder not recorded (latents without latents.json)"
    return model, (f"trained on {len(seqs)} sequences ({model.rows}x{model.width}), {describe_history(*training_history(out))}; "
                   f"{fit}")


def cmd_train(args: argparse.Namespace) -> int:
    model, line = train_codec(args.latents, Path(args.out), args, args.resume)
    print(f"{line}; model {model.model_id[:16]}… written to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-latent-codec", help="train the flow T and entropy models on latent .npy sequences")
    p.add_argument("latents", nargs="+", metavar="LATENTS", help=".npy files (frames, rows, width) or folders of them")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model file (.safetensors); checkpoints go to MODEL.ckpt")
    add_codec_training_options(p)
    p.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt")
    p.set_defaults(func=cmd_train)
