"""Face-model training commands: prepare-faces, train-face-model, encode-face-clips, build-face-bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sganc_stream.cli.train import add_codec_training_options
from sganc_stream.errors import InputError


def cmd_prepare(args: argparse.Namespace) -> int:
    from sganc_stream.training.face_data import prepare_faces

    summary = prepare_faces(args.data, args.out, args.size, val_fraction=args.val_fraction,
                            clip_val_fraction=args.clip_val_fraction, clip_stride=args.clip_stride,
                            clip_max_frames=args.clip_max_frames, limit=args.limit)
    sp = summary["splits"]
    print(f"{summary['crops']} aligned {args.size} px faces → {args.out} (train: {sp['train']['photo']} photos, "
          f"{sp['train']['clip']} clip frames; val: {sp['val']['photo']} photos, {sp['val']['clip']} clip frames; "
          f"{summary['photos_skipped_no_face']} photos skipped, no face found)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sganc_stream.models.fast_encoder import DESCRIPTOR_DIM
    from sganc_stream.training.face_data import load_prepared
    from sganc_stream.training.face_model import FaceModelConfig, TrainSettings, train_face_model

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(mode=args.mode, steps=args.steps, batch=args.batch, lr=args.lr, enc_lr=args.enc_lr,
                             adv_weight=args.adv_weight, augment=args.augment, r1_gamma=args.r1_gamma,
                             d_lr=args.d_lr, d_warmup=args.d_warmup, adv_ramp=args.adv_ramp,
                             adv_adaptive=args.adv_adaptive, fm_weight=args.fm_weight, d_crop=args.d_crop, d_arch=args.d_arch,
                             d_condition=args.d_condition,
                             colour_weight=args.colour_weight,
                             ema_kimg=args.ema_kimg, seed=args.seed, max_minutes=args.minutes, lr_ramp_down=args.lr_ramp_down,
                             sample_every=args.sample_every, checkpoint_every=args.checkpoint_every,
                             identity_weight=args.identity_weight, face_perceptual_weight=args.face_perceptual_weight,
                             temporal_weight=args.temporal_weight,
                             delta_weight=args.delta_weight, pair_fraction=args.pair_fraction, geometric=args.geometric,
                             tone_balance=args.tone_balance, photometric=args.photometric,
                             face_tone=args.face_tone, photo_share=args.photo_share, bf16=args.bf16)
    settings.check()  # bad options: one line before the data is loaded
    if args.new_discriminator and not args.resume:
        raise InputError("--new-discriminator replaces a resumed run's discriminator: it needs --resume")
    if args.init and args.mode != "joint":
        raise InputError("--init starts joint training from a model's generator and encoder: it needs --mode joint")
    data = load_prepared(args.data, mmap=False)
    train = data.select("train")
    val = data.select("val")
    if len(train) == 0:
        raise InputError(f"{args.data}: no training faces")
    size = int(data.images.shape[1])
    arch = FaceModelConfig(size=size, n_mlp=args.n_mlp, channel_max=args.channel_max, channel_base=args.channel_base,
                           channel_multiplier=args.channel_multiplier, enc_base_channels=args.enc_channels,
                           enc_identity_dim=DESCRIPTOR_DIM if args.enc_identity else 0)
    from sganc_stream.training.face_bundle import load_face_source

    generator = load_face_source(args.generator, need_encoder=False).generator if args.generator else None
    init = None
    if args.init:
        loaded = load_face_source(args.init, ema=False)
        init = (loaded.generator, loaded.encoder, str(args.init))
    preview = data.images[val[np.linspace(0, len(val) - 1, 8).astype(int)]] if len(val) >= 8 else None
    # Consecutive training-clip frames, as rows of the training subset (the temporal term's pairs).
    position = {int(g): k for k, g in enumerate(train)}
    pairs = np.array([(position[int(a)], position[int(b)]) for rows in data.clip_sequences("train").values()
                      for a, b in zip(rows[:-1], rows[1:]) if int(a) in position and int(b) in position],
                     dtype=np.int64).reshape(-1, 2)
    trainer = train_face_model(data.images[train], args.out, arch, settings, device=args.device, resume=args.resume,
                               generator=generator, preview=preview, pairs=pairs,
                               is_photo=np.array([data.index[int(i)]["kind"] == "photo" for i in train]),
                               new_discriminator=args.new_discriminator, init=init)
    last = trainer.history[-50:]
    summary = ({k: round(float(np.mean([h[k] for h in last if k in h])), 5) for k in last[-1]
                if k not in ("step", "images", "cpu_hours")} if last else {})
    print(f"{settings.mode} training at step {trainer.step_count}/{settings.steps}; last-50 mean losses {json.dumps(summary)}; "
          f"checkpoint {Path(args.out) / 'checkpoint.pt'}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from sganc_stream.training.face_bundle import encode_clip_latents

    files = encode_clip_latents(args.model, args.data, args.out, args.split, ema=not args.raw, progress=not args.quiet)
    print(f"encoded {len(files)} {args.split} clips to W+ sequences → {args.out} (encoder recorded in "
          f"{Path(args.out) / 'latents.json'}); next: sganc-stream train-latent-codec {args.out} --out CODEC.safetensors")
    return 0


def _precision(args: argparse.Namespace) -> bool | None:
    return True if args.fp16 else False if args.fp32 else None


def _bundle_line(out: Path, model_id: str) -> str:
    from sganc_stream.cli.latents import bundle_line

    return bundle_line(out, model_id)


def cmd_bundle(args: argparse.Namespace) -> int:
    from sganc_stream.training.face_bundle import build_face_bundle

    info = json.loads(Path(args.info).read_text()) if args.info else {}
    model_id = build_face_bundle(args.model, args.codec, args.out, info=info, fp16=_precision(args), ema=not args.raw,
                                 force=args.force)
    print(_bundle_line(Path(args.out), model_id))
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    """encode-face-clips → train-latent-codec → build-face-bundle in one resumable run (work files in --work)."""
    from sganc_stream.cli.train import train_codec
    from sganc_stream.training.face_bundle import build_face_bundle, encode_clip_latents, load_face_source
    from sganc_stream.training.face_data import load_prepared

    load_prepared(args.faces)  # the inputs are checked before the (large) model is read
    work = args.work if args.work is not None else args.out.with_name(args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    loaded = load_face_source(args.model, ema=not args.raw)
    print(f"1/3 encode {args.split} clips of {args.faces} with the {loaded.config['encoder'].get('type')} encoder "
          f"{loaded.encoder_id[:12]}… → {work / 'latents'}")
    files = encode_clip_latents(args.model, args.faces, work / "latents", args.split, ema=not args.raw,
                                progress=not args.quiet, loaded=loaded)
    codec = work / "codec.safetensors"
    print(f"2/3 train the latent codec on {len(files)} sequences → {codec} (checkpoint {codec.name}.ckpt; resumes)")
    _, line = train_codec([work / "latents"], codec, args, resume=True, progress=not args.quiet)
    print(f"    {line}")
    print(f"3/3 bundle generator, encoder and codec → {args.out}")
    model_id = build_face_bundle(args.model, codec, args.out, fp16=_precision(args), ema=not args.raw, loaded=loaded)
    print(_bundle_line(args.out, model_id))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-faces", help="FFHQ-align shared face photos and clip frames, split by identity",
                       description="Align ../shared/data faces/ photos and clips/ frames with the project's alignment "
                                   "code into OUT (faces.npy, index.csv, prep.json); identities never straddle the "
                                   "train/val split.")
    p.add_argument("out", type=Path, metavar="OUTDIR")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with faces/ and clips/")
    p.add_argument("--size", type=int, default=64, help="crop side (power of two, default 64)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of photo identities held out")
    p.add_argument("--clip-val-fraction", type=float, default=0.25, help="share of clip identities held out")
    p.add_argument("--clip-stride", type=int, default=1, help="keep every k-th clip frame")
    p.add_argument("--clip-max-frames", type=int, default=300, help="frames kept per clip")
    p.add_argument("--limit", type=int, help="files per folder (quick trials)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train-face-model", help="train the face generator / encoder (gan, encoder or joint mode)",
                       description="Train on a prepare-faces folder's train split; checkpoints, sample grids and "
                                   "log.jsonl go to --out. Resumable (--resume); --minutes ends a chunk cleanly.")
    p.add_argument("data", type=Path, metavar="DATA_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--mode", choices=["gan", "encoder", "joint"], default="joint")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="G learning rate (and D's unless --d-lr)")
    p.add_argument("--enc-lr", type=float, default=1e-3)
    p.add_argument("--d-lr", type=float, default=0.0, help="discriminator learning rate (0 = --lr)")
    p.add_argument("--adv-weight", type=float, default=0.0, help="joint mode: adversarial term weight (0 = off)")
    p.add_argument("--d-warmup", type=int, default=0,
                   help="joint mode: steps the discriminator trains alone after it is created (e.g. on --resume)")
    p.add_argument("--adv-ramp", type=int, default=0,
                   help="joint mode: steps after the D warm-up over which the adversarial and feature-matching "
                        "weights rise linearly to their values")
    p.add_argument("--adv-adaptive", action="store_true",
                   help="joint mode: scale --adv-weight by VQGAN's adaptive weight (gradient-norm ratio of the "
                        "reconstruction and adversarial losses at G's last layer)")
    p.add_argument("--fm-weight", type=float, default=0.0,
                   help="joint mode: pix2pixHD feature-matching weight (L1 of D's features of x and G(E(x)))")
    p.add_argument("--colour-weight", type=float, default=0.0,
                   help="joint/encoder mode: weight of a colour term, L1 of both images average-pooled to 16x16 cells "
                        "(keeps skin tone and saturation; DPED's colour loss)")
    p.add_argument("--tone-balance", type=float, default=0.0, metavar="ALPHA",
                   help="draw training faces with probability (faces of that skin tone)^-ALPHA, tones binned by the "
                        "luma of the central skin box: 0.5 = square-root sampling, 1 = a flat histogram, 0 = uniform "
                        "(a model otherwise lightens the dark skin its data holds little of)")
    p.add_argument("--d-crop", type=int, default=0, metavar="PX",
                   help="joint mode: the discriminator judges random full-resolution PX x PX crops (a patch "
                        "discriminator, about (PX/size)^2 of the cost; a power of two; 0 = whole images)")
    p.add_argument("--d-arch", choices=("stylegan2", "patchgan"), default="stylegan2",
                   help="joint mode: the discriminator, StyleGAN2's residual one (the generator's widths) or "
                        "pix2pix's PatchGAN (per-patch logits averaged; learns texture from few steps)")
    p.add_argument("--d-condition", choices=("none", "lowpass"), default="none",
                   help="joint mode, patchgan: lowpass = a conditional D (pix2pix's) that judges each image stacked "
                        "with its real face's 16x16-cell low-pass, so G cannot move tone and colour toward what "
                        "looks typical (an unconditional D darkened light faces); needs --augment without color")
    p.add_argument("--augment", default="color,translation,cutout", help="DiffAugment policy for D ('none' = off)")
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--ema-kimg", type=float, default=5.0)
    p.add_argument("--channel-max", type=int, default=64, help="generator channel cap")
    p.add_argument("--channel-base", type=int, default=0,
                   help="generator widths min(BASE // resolution, --channel-max), tapering toward high resolution "
                        "(0 = rosinality's table)")
    p.add_argument("--n-mlp", type=int, default=8, help="mapping-network layers (unused by joint training)")
    p.add_argument("--identity-weight", type=float, default=0.0, help="dlib face-descriptor distance loss weight")
    p.add_argument("--face-perceptual-weight", type=float, default=0.0,
                   help="LPIPS-style distance of dlib's network's stage features, weight")
    p.add_argument("--temporal-weight", type=float, default=0.0,
                   help="joint mode: weight of mean |E(x_t) - E(x_t+1)| on consecutive clip frames")
    p.add_argument("--delta-weight", type=float, default=0.0, help="joint mode: e4e delta regularisation weight")
    p.add_argument("--pair-fraction", type=float, default=0.25, help="share of a batch drawn as consecutive frame pairs")
    p.add_argument("--geometric", type=float, default=0.0,
                   help="probability of a small random shift/scale/rotation of each training face")
    p.add_argument("--photometric", type=float, default=0.0, metavar="P",
                   help="probability of a random exposure/contrast/saturation/white-balance change of each training "
                        "face, the same for E's input and the target (E learns to carry tone through W+)")
    p.add_argument("--face-tone", type=float, default=0.0, metavar="P",
                   help="probability of a random exposure change of the face region only, background kept (mostly "
                        "darker: dark faces on bright backgrounds), the same for E's input and the target")
    p.add_argument("--photo-share", type=float, default=0.0, metavar="S",
                   help="share of single-face draws that are photos rather than clip frames (0: the data's own mix); "
                        "photos are one person each, so more distinct people per batch")
    p.add_argument("--channel-multiplier", type=int, default=1)
    p.add_argument("--enc-channels", type=int, default=32, help="encoder base channels")
    p.add_argument("--bf16", action="store_true",
                   help="CPU, joint mode: run E, G and dlib's network under bfloat16 autocast (AVX512-BF16), losses "
                        "in float32 (benchmarks/train_step_speed.py measures its speed and a paired held-out check)")
    p.add_argument("--enc-identity", action="store_true",
                   help="condition the encoder on dlib's 128-D face descriptor of its input (a linear map to W+ "
                        "offsets; costs one dlib forward per encoded frame)")
    p.add_argument("--generator", metavar="CKPT", help="encoder mode: frozen G (gan checkpoint.pt or a bundle)")
    p.add_argument("--lr-ramp-down", type=float, default=0.0, help="last share of --steps with learning rates falling to 10%%")
    p.add_argument("--minutes", type=float, default=0.0, help="stop (and checkpoint) after this wall time")
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--init", metavar="MODEL",
                   help="joint mode, new run: start G and E from this bundle's or training checkpoint's weights (raw, "
                        "not EMA) with fresh optimizers and discriminator (e.g. when a run's checkpoints are lost)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt")
    p.add_argument("--new-discriminator", action="store_true",
                   help="with --resume: drop the checkpoint's discriminator and start one afresh (to change "
                        "--d-arch, --d-crop or --d-condition; its --d-warmup counts from now)")
    p.set_defaults(func=cmd_train)

    model_help = "train-face-model checkpoint.pt, official pSp/e4e .pt, or a bundle with an encoder"
    p = sub.add_parser("encode-face-clips", help="encode prepared clips to W+ sequences (latent codec training data)",
                       description="Encode every clip of a prepare-faces folder with the model's encoder into "
                                   "LATENT_DIR/<clip>.npy; LATENT_DIR/latents.json records the encoder's content hash, "
                                   "which train-latent-codec keeps. Faces must be prepared at the encoder's input size "
                                   "(256 px for pSp/e4e) or larger. Running it again resumes.")
    p.add_argument("data", type=Path, metavar="DATA_DIR")
    p.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    p.add_argument("--out", type=Path, required=True, metavar="LATENT_DIR")
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.add_argument("--raw", action="store_true", help="a checkpoint's raw weights instead of its EMA copy")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    def add_precision(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--fp16", action="store_true", help="store float16 weights (default for training checkpoints)")
        g.add_argument("--fp32", action="store_true", help="store float32 weights (default for .pt files and bundles)")

    p = sub.add_parser("build-face-bundle", help="merge generator, encoder and latent codec into one model bundle",
                       description="Write one bundle with the model's generator and encoder and the codec's tables. "
                                   "The licence is that of the weights given (our data's terms for our checkpoints, "
                                   "the file's own, e.g. NVIDIA's non-commercial terms, otherwise). A codec trained "
                                   "on another encoder's latents is refused unless --force.")
    p.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    p.add_argument("--codec", required=True, metavar="CODEC", help="train-latent-codec output for this encoder")
    p.add_argument("--out", required=True, metavar="BUNDLE")
    p.add_argument("--info", metavar="JSON", help="training facts to store in the bundle config")
    add_precision(p)
    p.add_argument("--force", action="store_true", help="accept a codec trained for another encoder")
    p.add_argument("--raw", action="store_true", help="a checkpoint's raw weights instead of its EMA copy")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("complete-bundle", help="give a generator+encoder model its latent codec: encode, train, bundle",
                       description="encode-face-clips, train-latent-codec and build-face-bundle in one run: MODEL (e.g. "
                                   "the bundle of `weights bundle psp_ffhq_encode.pt`) → a full bundle that transcodes. "
                                   "Work files go to --work; run the same command again to resume after a stop.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--faces", type=Path, required=True, metavar="DATA_DIR",
                   help="prepare-faces folder, aligned at the encoder's input size (256 for pSp/e4e)")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE")
    p.add_argument("--work", type=Path, metavar="DIR", help="latents and codec checkpoint (default BUNDLE.work)")
    p.add_argument("--split", choices=["train", "val"], default="train", help="clips whose latents train the codec")
    add_codec_training_options(p)
    add_precision(p)
    p.add_argument("--raw", action="store_true", help="a training checkpoint's raw weights instead of its EMA copy")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_complete)
