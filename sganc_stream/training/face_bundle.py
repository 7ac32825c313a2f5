"""From a face model to the shipped bundle: encode clips to W+ sequences, then assemble the bundle.

A face model here is any file holding a generator and an encoder: our ``train-face-model`` checkpoint
(``checkpoint.pt``, EMA or raw weights), an official pSp / e4e ``.pt``, or a bundle (e.g. from ``weights bundle``).
The latent codec must be trained on the W+ sequences *this* encoder produces (its statistics are what the flow
and tables model), so the order is: encode the training-identity clips (``latents.json`` beside them records the
encoder's content hash) → ``train-latent-codec`` on those (the codec keeps that hash) → merge generator, encoder
and the frozen ``codec.*`` part into one bundle, which refuses a codec trained for another encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sganc_stream.bundle import is_bundle_file, load_bundle
from sganc_stream.errors import InputError
from sganc_stream.fileio import write_bytes_atomic, write_npy_atomic
from sganc_stream.models.checkpoint import (FFHQ_ALIGNMENT, LoadedModel, encoder_config_dict, generator_config_dict,
                                            load_checkpoint, model_from_object, read_torch_file,
                                            save_model_bundle)
from sganc_stream.models.encoders import images_to_tensor
from sganc_stream.models.fast_encoder import FastEncoder
from sganc_stream.models.stylegan2 import Generator
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import load_trainer
from sganc_stream.training.latent_files import LATENTS_MANIFEST, read_latents_manifest

LICENCE = ("Trained by sganc-stream on UTKFace, mixed real face photos (CelebA-HQ/FFHQ-like) and talking-head clips "
           "(MEAD, VoxCeleb2, HDTF and others): research and non-commercial use only, like its training data")
TRAINING_KEYS = ("arch", "modules", "settings")  # what marks a train-face-model checkpoint.pt


def load_face_source(path: str | Path, ema: bool = True, *, need_encoder: bool = True) -> LoadedModel:
    """Generator (+ encoder) and bundle config of a training checkpoint, an official ``.pt`` or a bundle.

    Every ``.pt`` goes through the one safe reader (:func:`read_torch_file`). A training checkpoint yields its
    EMA (or, ``ema=False``, raw) weights with ``source == 'training'``, our data's licence and the FFHQ alignment;
    other files keep their own config (licence of the weights, alignment). ``need_encoder``: a generator-only
    file is an InputError.
    """
    path = Path(path)
    if is_bundle_file(path):
        loaded = load_checkpoint(path)
    else:
        obj = read_torch_file(path)
        if isinstance(obj, dict) and all(k in obj for k in TRAINING_KEYS):
            del obj
            g, e = load_trainer(path).exported(ema)
            config: dict[str, Any] = {"generator": generator_config_dict(g), "licence": LICENCE, "alignment": FFHQ_ALIGNMENT}
            if e is not None:
                config["encoder"] = encoder_config_dict(e)
            loaded = LoadedModel(g, e, config, "training")
        else:
            loaded = model_from_object(obj, path)
    if need_encoder and loaded.encoder is None:
        raise InputError(f"{path}: holds a generator but no encoder (use a pSp/e4e checkpoint or a bundle with an "
                         "encoder, or train one with train-face-model --mode joint or encoder)")
    loaded.generator.eval().requires_grad_(False)
    if loaded.encoder is not None:
        loaded.encoder.eval().requires_grad_(False)
    return loaded


def load_face_models(path: str | Path, ema: bool = True) -> tuple[Generator, nn.Module]:
    """Generator and encoder of a training checkpoint (EMA or raw weights), an official pSp/e4e ``.pt`` or a bundle."""
    loaded = load_face_source(path, ema)
    return loaded.generator, loaded.encoder


def encode_batch_size(e: nn.Module) -> int:
    """Faces per encoder call: 64 for our small encoder, 4 for IR-SE50 ones (≈ 1 GB of activations at 256 px)."""
    return 64 if isinstance(e, FastEncoder) else 4


@torch.no_grad()
def encode_faces(e: nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 (n, h, w, 3) aligned faces → float32 W+ (n, rows, width); faces not at E's input size are resized by E."""
    out = [e(images_to_tensor(images[i:i + batch])).float().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)


def _manifest_of(model: LoadedModel, model_path: Path, data_dir: Path, split: str, ema: bool) -> dict[str, Any]:
    return {"encoder_id": model.encoder_id, "encoder_type": model.config["encoder"].get("type"),
            "input_size": int(model.config["encoder"]["input_size"]), "model": str(model_path), "source": model.source,
            "ema": ema if model.source == "training" else None, "data": str(data_dir.resolve()), "split": split,
            "clips": {}}


def encode_clip_latents(model: str | Path, data_dir: str | Path, out_dir: str | Path, split: str = "train",
                        ema: bool = True, progress: bool = True, loaded: LoadedModel | None = None) -> list[Path]:
    """One ``.npy`` (frames, rows, width) per prepared clip of ``split``: the latent codec's training data.

    Faces must be aligned at least at the encoder's input size (``prepare-faces --size N``); larger ones are resized
    by the encoder exactly as the transcoder's are. ``out_dir/latents.json`` records the encoder's content hash and
    each finished clip; a second run with the same encoder, data and split resumes, anything else is refused.
    ``loaded``: ``model`` already loaded by :func:`load_face_source` (not read again).
    """
    model_path, data_dir, out_dir = Path(model), Path(data_dir), Path(out_dir)
    data = load_prepared(data_dir)
    loaded = loaded or load_face_source(model_path, ema)
    e = loaded.encoder
    side = int(loaded.config["encoder"]["input_size"])
    if data.images.shape[1] < side:
        raise InputError(f"{data_dir}: faces are {data.images.shape[1]} px but the encoder takes {side} px "
                         f"(prepare them with prepare-faces --size {side})")
    sequences = {k: v for k, v in sorted(data.clip_sequences(split).items()) if len(v) >= 2}
    if not sequences:
        raise InputError(f"{data_dir}: no clip of split {split!r} with 2 or more frames to encode")
    manifest = _manifest_of(loaded, model_path, data_dir, split, ema)
    previous = read_latents_manifest(out_dir)
    if previous is not None:
        same = all(previous.get(k) == manifest[k] for k in ("encoder_id", "data", "split"))
        if not same:
            raise InputError(f"{out_dir}: holds latents of encoder {str(previous.get('encoder_id'))[:12]}… for "
                             f"{previous.get('data')} ({previous.get('split')}); choose another --out")
        manifest["clips"] = {k: v for k, v in previous["clips"].items() if (out_dir / k).is_file()}
    elif out_dir.is_dir() and any(out_dir.rglob("*.npy")):
        raise InputError(f"{out_dir}: already holds .npy files not written by encode-face-clips; choose an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    batch = encode_batch_size(e)
    bar = tqdm(sequences.items(), desc="encode clips", unit="clip", disable=not progress, mininterval=2.0)
    for source, rows in bar:
        name = source.replace("/", "__").rsplit(".", 1)[0] + ".npy"
        path = out_dir / name
        if manifest["clips"].get(name) != len(rows):
            with torch.inference_mode():
                latents = encode_faces(e, np.asarray(data.images[rows]), batch)
            write_npy_atomic(path, latents)
            manifest["clips"][name] = len(rows)
            write_bytes_atomic(out_dir / LATENTS_MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        written.append(path)
    write_bytes_atomic(out_dir / LATENTS_MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return written


def codec_encoder_id(codec_config: dict[str, Any]) -> str | None:
    """The encoder id a latent codec records for its training latents (None: not recorded)."""
    info = codec_config.get("info") or {}
    return info.get("encoder_id") if isinstance(info, dict) else None


def build_face_bundle(model: str | Path, codec: str | Path, out: str | Path, *, info: dict[str, Any] | None = None,
                      fp16: bool | None = None, ema: bool = True, force: bool = False,
                      loaded: LoadedModel | None = None) -> str:
    """Generator + encoder + the codec part of ``codec`` → one bundle at ``out``; returns its model id.

    ``model``: a training checkpoint (stored float16 by default, our data's licence) or any file with a generator
    and an encoder (official ``.pt`` or bundle: stored float32 by default, keeping the licence and alignment the
    weights came with). ``fp16`` overrides the default. A codec recording another encoder's id is an InputError
    unless ``force``. ``loaded``: ``model`` already loaded by :func:`load_face_source` (its modules are cast in place
    when stored as float16).
    """
    loaded = loaded or load_face_source(model, ema)
    g, e = loaded.generator, loaded.encoder
    codec_bundle = load_bundle(codec)
    if "codec" not in codec_bundle.config or not codec_bundle.has_part("codec"):
        raise InputError(f"{codec}: not a latent codec file (train one with train-latent-codec)")
    ccfg = codec_bundle.config["codec"]
    if (int(ccfg["rows"]), int(ccfg["width"])) != (g.n_latent, g.config.style_dim):
        raise InputError(f"{codec}: codec is for {ccfg['rows']}x{ccfg['width']} W+, the generator takes "
                         f"{g.n_latent}x{g.config.style_dim}")
    trained_for = codec_encoder_id(ccfg)
    extra: dict[str, Any] = {"codec": ccfg, "training": info or {}}
    if trained_for is not None and trained_for != loaded.encoder_id:
        if not force:
            raise InputError(f"{codec}: latent codec was trained on W+ of encoder {trained_for[:12]}…, but {model} holds "
                             f"encoder {loaded.encoder_id[:12]}… ({loaded.config['encoder'].get('type')}); train one on "
                             "this encoder's latents (encode-face-clips, train-latent-codec) or pass --force")
        extra["codec_fit"] = {"forced": True, "codec_encoder_id": trained_for, "encoder_id": loaded.encoder_id}
    training = loaded.source == "training"
    fp16 = training if fp16 is None else fp16
    weights_id = loaded.encoder_id if fp16 or loaded.config["encoder"].get("weights_id") else None
    if fp16:
        g, e = g.half(), e.half()
    return save_model_bundle(out, g, e, alignment=loaded.config.get("alignment", FFHQ_ALIGNMENT),
                             licence=LICENCE if training else str(loaded.config.get("licence", "")),
                             extra_config=extra, encoder_weights_id=weights_id,
                             extra_tensors={k: v for k, v in codec_bundle.tensors.items() if k.startswith("codec.")})
