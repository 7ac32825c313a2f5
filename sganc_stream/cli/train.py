"""`sganc-stream train-latent-codec`: train T and the entropy models on latent sequences, then freeze;
`sganc-stream fit-context-tables`: add temporal-context tables (bitstream v5) to a bundle that lacks them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.context import CONTEXT_CLASSES, MAX_CLASSES
from sganc_stream.latent.quantize import ROUNDING_OFFSET


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
    p.add_argument("--context-classes", type=int, default=CONTEXT_CLASSES, metavar="S",
                   help="channel classes of the temporal-context tables fitted after training (--inter-context "
                        f"temporal; 0 = none; default {CONTEXT_CLASSES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def train_codec(latents: list[Any], out: Path, args: argparse.Namespace, resume: bool,
                progress: bool = True) -> tuple[Any, str]:
    """Train a codec on ``latents`` (.npy files / folders) with the options of :func:`add_codec_training_options`.

    The encoder id recorded by encode-face-clips (``latents.json``) goes into the codec; returns (model, log phrase).
    """
    from sganc_stream.training.latent_codec import (TrainConfig, describe_history, load_latent_sequences,
                                                    train_latent_codec, training_history)
    from sganc_stream.training.latent_files import find_latent_files, latents_encoder_id

    if args.steps < 1 or args.batch < 1 or not args.lam > 0:
        raise InputError("--steps and --batch must be >= 1 and --lambda > 0")
    if not 0 <= args.context_classes <= MAX_CLASSES:
        raise InputError(f"--context-classes must be between 0 (none) and {MAX_CLASSES}, got {args.context_classes}")
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
                                  info={"encoder_id": encoder} if encoder else None,
                                  context_classes=args.context_classes)
    fit = f"for encoder {encoder[:12]}…" if encoder else "encoder not recorded (latents without latents.json)"
    return model, (f"trained on {len(seqs)} sequences ({model.rows}x{model.width}), {describe_history(*training_history(out))}; "
                   f"{fit}")


def cmd_train(args: argparse.Namespace) -> int:
    model, line = train_codec(args.latents, Path(args.out), args, args.resume)
    print(f"{line}; model {model.model_id[:16]}… written to {args.out}")
    return 0


def cmd_fit_context(args: argparse.Namespace) -> int:
    """Fit temporal-context tables on latent sequences and write BUNDLE with them to --out (atomically)."""
    from sganc_stream.bundle import Bundle, load_bundle
    from sganc_stream.cli.latents import bundle_line
    from sganc_stream.fileio import check_writable
    from sganc_stream.latent.model import LatentCodecModel, no_codec_error, with_codec_tables
    from sganc_stream.training.face_bundle import codec_encoder_id
    from sganc_stream.training.latent_codec import (EMPIRICAL_RESIDUAL_G, add_coarser_steps, fit_context,
                                                    fit_empirical_residuals, load_latent_sequences)
    from sganc_stream.training.latent_files import find_latent_files, latents_encoder_id

    if not 1 <= args.classes <= MAX_CLASSES:
        raise InputError(f"--classes must be between 1 and {MAX_CLASSES}, got {args.classes}")
    if args.max_frames < 2:
        raise InputError(f"--max-frames must be at least 2, got {args.max_frames}")
    params = StreamParams(args.mode, args.g if args.mode == "open" else 0, 0, damping=args.drift_damping,
                          rounding_offset=args.rounding_offset, decimation=args.decimation)  # InputError up front
    check_writable(args.out)  # before any work
    bundle = load_bundle(args.bundle)
    if "codec" not in bundle.config:
        raise no_codec_error(str(args.bundle))
    codec = LatentCodecModel.from_bundle(bundle, source=str(args.bundle))
    files = find_latent_files(args.latents)
    encoder, trained_for = latents_encoder_id(files), codec_encoder_id(bundle.config["codec"])
    if encoder and trained_for and encoder != trained_for:
        raise InputError(f"the latents are W+ of encoder {encoder[:12]}…, the codec of {args.bundle} was trained on "
                         f"encoder {trained_for[:12]}…'s; fit on that encoder's latents (encode-face-clips)")
    seqs = load_latent_sequences(files)
    if seqs[0].shape[1:] != (codec.rows, codec.width):
        raise InputError(f"the latents are {seqs[0].shape[1]}x{seqs[0].shape[2]} W+, the codec of {args.bundle} codes "
                         f"{codec.rows}x{codec.width}")
    added = sorted(set(args.add_steps) - set(codec.steps))
    kept = sorted(set(args.add_steps) & set(codec.steps))
    residual_gs = sorted(codec.empirical_residuals) or list(EMPIRICAL_RESIDUAL_G)
    if added:  # InputError for a step no preset divides (or not finite and positive), before any fitting
        default = codec.steps[codec.step_index(None)]
        # tables fitted below for this encoder are not fitted twice (add_coarser_steps refits the ones it finds)
        codec.context_tables = []
        if args.mode == "open":
            codec.empirical_residuals = {}
        add_coarser_steps(codec, seqs, added, args.max_frames)
        codec.default_step = default  # commands without --step keep coding at the step they did
    codec.context_tables = fit_context(codec, seqs, args.classes, args.max_frames, progress=not args.quiet,
                                       params=params)
    # empirical residual tables (those the model has, else train-latent-codec's periods) are fitted for the same
    # encoder; in open mode only: the closed loop sends no residuals
    refit = args.mode == "open"
    if refit:
        codec.empirical_residuals = fit_empirical_residuals(codec, seqs, residual_gs, args.max_frames, params)
    out = with_codec_tables(bundle, codec)
    # which encoder the tables are for: `inspect` shows it, so a user can code with the options that match them
    fitted_for = {"mode": args.mode, "g": params.g, "drift_damping": args.drift_damping,
                  "rounding_offset": args.rounding_offset, "decimation": args.decimation}
    out = Bundle(out.tensors, {**out.config, "codec": {**out.config["codec"], "tables_encoder": fitted_for}})
    out.save(args.out)
    frames = min(sum(len(s) for s in seqs), args.max_frames)
    if kept:
        print(f"step presets {', '.join(f'{s:g}' for s in kept)} are presets already: kept as they are")
    if added:
        print(f"step presets {', '.join(f'{s:g}' for s in added)} added (difference tables histogrammed on the "
              f"latents, intra tables rebinned): presets {', '.join(f'{s:g}' for s in sorted(codec.steps))}, "
              f"default step {codec.steps[codec.step_index(None)]:g}")
    refitted = (f" and empirical residual tables (g {', '.join(map(str, sorted(codec.empirical_residuals)))})"
                if refit else "")
    print(f"temporal-context tables ({args.classes} classes, {len(codec.steps)} presets){refitted} fitted on {frames} "
          f"frames of {len(seqs)} sequences, for the {args.mode}-loop encoder with g {params.g}, damping "
          f"{args.drift_damping:g}, rounding offset {args.rounding_offset:g}, decimation {args.decimation}")
    print(bundle_line(Path(args.out), out.model_id))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-latent-codec", help="train the flow T and entropy models on latent .npy sequences")
    p.add_argument("latents", nargs="+", metavar="LATENTS", help=".npy files (frames, rows, width) or folders of them")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model file (.safetensors); checkpoints go to MODEL.ckpt")
    add_codec_training_options(p)
    p.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fit-context-tables", help="add temporal-context tables (--inter-context temporal) to a bundle",
                       description="Fit the temporal-context difference tables (bitstream v5, SPEC §4.3) of every step "
                                   "preset of BUNDLE's latent codec on W+ sequences of its encoder (encode-face-clips "
                                   "output, or any .npy (frames, rows, width) files) and write BUNDLE with them to "
                                   "--out; everything else is kept, the model id changes. Tables BUNDLE already has "
                                   "are replaced, and in open mode empirical residual tables (--residual-table "
                                   "empirical) are fitted on the residuals the same encoder sends.")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a face-model bundle or a codec file")
    p.add_argument("latents", nargs="+", metavar="LATENTS", help=".npy files (frames, rows, width) or folders of them")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE_OUT", help="output bundle (may be BUNDLE)")
    p.add_argument("--add-steps", type=float, nargs="+", default=[], metavar="STEP",
                   help="first add these step presets, each an integer multiple (at least 2) of a preset: difference "
                        "tables histogrammed on LATENTS, intra tables rebinned from the preset that divides them "
                        "(coarser presets let --target-kbps reach low rates); commands without --step keep coding "
                        "at the bundle's default step")
    p.add_argument("--classes", type=int, default=CONTEXT_CLASSES, metavar="S",
                   help=f"channel classes (1 … {MAX_CLASSES}; default {CONTEXT_CLASSES})")
    p.add_argument("--max-frames", type=int, default=4000, help="frames used, whole sequences first (default 4000)")
    enc = p.add_argument_group("the encoder the tables are for (they are fitted on the differences it sends)")
    enc.add_argument("--mode", choices=("open", "closed"), default="open", help="default: open (the paper's)")
    enc.add_argument("--g", type=int, default=10, help="residual period in open mode (default: 10)")
    enc.add_argument("--drift-damping", type=float, default=0.0, metavar="A", help="open mode (default: 0)")
    enc.add_argument("--rounding-offset", type=float, default=ROUNDING_OFFSET, metavar="F",
                     help="dead zone of the differences' quantizer (default: 0.5, rounding)")
    enc.add_argument("--decimation", type=int, default=1, metavar="D", help="every D-th frame coded (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit_context)
