"""Latent-sequence files (``.npy``, (frames, rows, width)) and the manifest that says which encoder made them.

``encode-face-clips`` writes ``latents.json`` beside its ``.npy`` files: the encoder's content hash
(:func:`sganc_stream.bundle.encoder_id`) and the clips it finished. ``train-latent-codec`` reads it back and records
the hash in the codec (``codec.info.encoder_id``), so a bundle can refuse a codec trained for another encoder.
Kept apart from the training code so that both commands read it without importing each other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sganc_stream.errors import InputError

LATENTS_MANIFEST = "latents.json"


def find_latent_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """``.npy`` files given directly or found (recursively, sorted) in given folders; InputError if none."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.npy"))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no .npy latent files found")
    return files


def read_latents_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder/latents.json`` (dict with ``encoder_id`` and ``clips``: file name → frames), or None if absent."""
    path = Path(folder) / LATENTS_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"{path}: unreadable latents manifest; delete the folder and encode again") from None
    if not isinstance(data, dict) or not isinstance(data.get("clips"), dict):
        raise InputError(f"{path}: not a latents manifest (no 'clips' table)")
    return data


def latents_encoder_id(files: Iterable[Path]) -> str | None:
    """The one encoder id the manifests give for ``files``; None when no file has one (e.g. synthetic latents).

    Files of several encoders, or some with and some without a recorded encoder, are an InputError: a codec is
    trained for one encoder's W+ statistics.
    """
    ids: dict[str | None, list[str]] = {}
    manifests: dict[Path, dict[str, Any] | None] = {}
    for f in files:
        folder = f.parent
        if folder not in manifests:
            manifests[folder] = read_latents_manifest(folder)
        m = manifests[folder]
        eid = m.get("encoder_id") if m is not None and f.name in m["clips"] else None
        ids.setdefault(eid, []).append(f.as_posix())
    if len(ids) > 1:
        parts = [f"{(k[:12] + '…') if k else 'no recorded encoder'} ({len(v)} files, e.g. {v[0]})" for k, v in ids.items()]
        raise InputError(f"latents of different encoders mixed: {'; '.join(parts)}; train on one encoder's latents")
    return next(iter(ids))
