"""From a trained face model to the shipped bundle: encode clips to W+ sequences, then assemble the bundle.

The latent codec must be trained on the W+ sequences *this* encoder produces (its statistics are what the flow
and tables model), so the order is: train E+G → encode the training-identity clips → ``train-latent-codec`` on
those → merge generator (fp16), encoder (fp16) and the frozen ``codec.*`` part into one bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sganc_stream.bundle import load_bundle
from sganc_stream.errors import InputError
from sganc_stream.models.checkpoint import FFHQ_ALIGNMENT, load_checkpoint, save_model_bundle
from sganc_stream.models.fast_encoder import FastEncoder
from sganc_stream.models.stylegan2 import Generator
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import load_trainer, to_tensor

LICENCE = ("Trained by sganc-stream on UTKFace, mixed real face photos (CelebA-HQ/FFHQ-like) and talking-head clips "
           "(MEAD, VoxCeleb2, HDTF and others): research and non-commercial use only, like its training data")


def load_face_models(path: str | Path, ema: bool = True) -> tuple[Generator, FastEncoder]:
    """Generator and encoder from a training checkpoint (``checkpoint.pt``: EMA or raw weights) or a bundle."""
    path = Path(path)
    if path.suffix == ".pt":
        g, e = load_trainer(path).exported(ema)
    else:
        loaded = load_checkpoint(path)
        g, e = loaded.generator, loaded.encoder
    if not isinstance(e, FastEncoder):
        raise InputError(f"{path}: holds no fast encoder (train with --mode joint or encoder first)")
    return g.eval().requires_grad_(False), e.eval().requires_grad_(False)


@torch.no_grad()
def encode_faces(e: FastEncoder, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 (n, h, w, 3) aligned faces → float32 W+ (n, rows, width)."""
    out = [e(to_tensor(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)


def encode_clip_latents(model: str | Path, data_dir: str | Path, out_dir: str | Path, split: str = "train",
                        ema: bool = True) -> list[Path]:
    """One ``.npy`` (frames, rows, width) per prepared clip of ``split``: the latent codec's training data."""
    _, e = load_face_models(model, ema)
    data = load_prepared(data_dir)
    if data.images.shape[1] != e.input_size:
        raise InputError(f"{data_dir}: faces are {data.images.shape[1]} px but the encoder takes {e.input_size} px")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source, rows in sorted(data.clip_sequences(split).items()):
        if len(rows) < 2:
            continue
        path = out_dir / (source.replace("/", "__").rsplit(".", 1)[0] + ".npy")
        np.save(path, encode_faces(e, np.asarray(data.images[rows])))
        written.append(path)
    if not written:
        raise InputError(f"{data_dir}: no clip of split {split!r} to encode")
    return written


def build_face_bundle(model: str | Path, codec: str | Path, out: str | Path, *, info: dict[str, Any] | None = None,
                      fp16: bool = True, ema: bool = True) -> str:
    """Generator + encoder (fp16 storage) + the codec part of ``codec`` → one bundle at ``out``; returns its id."""
    g, e = load_face_models(model, ema)
    codec_bundle = load_bundle(codec)
    if "codec" not in codec_bundle.config or not codec_bundle.has_part("codec"):
        raise InputError(f"{codec}: not a latent codec file (train one with train-latent-codec)")
    ccfg = codec_bundle.config["codec"]
    if (int(ccfg["rows"]), int(ccfg["width"])) != (g.n_latent, g.config.style_dim):
        raise InputError(f"{codec}: codec is for {ccfg['rows']}x{ccfg['width']} W+, the generator takes "
                         f"{g.n_latent}x{g.config.style_dim}")
    if fp16:
        g, e = g.half(), e.half()
    return save_model_bundle(out, g, e, alignment=FFHQ_ALIGNMENT, licence=LICENCE,
                             extra_config={"codec": ccfg, "training": info or {}},
                             extra_tensors={k: v for k, v in codec_bundle.tensors.items() if k.startswith("codec.")})
