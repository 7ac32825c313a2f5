"""Seeded synthetic weights for the official checkpoint layouts (numpy only).

This is the recipe of ``../shared/reference/README.md`` §3: it fills a layout ``[[key, shape, dtype], ...]``
deterministically, so the reference implementations' outputs can be compared with ours without the real
(non-downloadable) checkpoints. Tests use it to build official-layout checkpoint files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

FIR_UP = (np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0 * 4.0).astype(np.float32)
MAPPING_RE = re.compile(r"(^|\.)style\.\d+\.(weight|bias)$")

Entry = tuple[str, list[int], str]


def load_layout(path: str | os.PathLike[str]) -> list[Entry]:
    """Read a layout JSON file: a list of ``[key, shape, dtype]`` in state-dict order."""
    return [(k, list(s), d) for k, s, d in json.loads(Path(path).read_text())]


def layout_of(state_dict: dict[str, torch.Tensor]) -> list[Entry]:
    """The layout entries of a state dict, in its order."""
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()]


def recipe_value(seed: int, index: int, key: str, shape: list[int]) -> np.ndarray:
    """The value of entry ``index`` (first matching rule of the README table)."""
    draw = np.random.default_rng([seed, index]).standard_normal(tuple(shape)).astype(np.float32)
    if key.endswith("num_batches_tracked"):
        return np.zeros((), np.int64)
    if key.endswith(".kernel"):
        return FIR_UP.copy()
    if key.endswith("running_var"):
        return np.abs(draw) + np.float32(0.5)
    if MAPPING_RE.search(key):
        return draw * np.float32(100.0 if key.endswith("weight") else 50.0)
    if key.endswith(".weight") and len(shape) == 4:
        return draw * np.float32(np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])))
    return draw * np.float32(0.5)


def iter_weights(entries: Iterable[Entry], seed: int) -> Iterator[tuple[str, np.ndarray]]:
    for i, (key, shape, _dtype) in enumerate(entries):
        yield key, recipe_value(seed, i, key, shape)


def make_weights(entries: Iterable[Entry], seed: int) -> dict[str, torch.Tensor]:
    """Recipe weights as torch tensors, in layout order."""
    return {k: torch.from_numpy(v) for k, v in iter_weights(entries, seed)}


def weights_sha256(tensors: Iterable[torch.Tensor | np.ndarray]) -> str:
    """SHA-256 of the concatenated little-endian raw bytes (the manifests' ``weights_sha256``)."""
    h = hashlib.sha256()
    for t in tensors:
        a = t.numpy() if isinstance(t, torch.Tensor) else t
        h.update(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


STYLE_KEY = re.compile(r"^encoder\.styles\.(\d+)\.")


def _style_index(key: str) -> int:
    """The style head a pSp encoder key belongs to (-1 for the shared backbone and laterals)."""
    m = STYLE_KEY.match(key)
    return -1 if m is None else int(m.group(1))


def psp_checkpoint(layout_dir: str | os.PathLike[str], seed: int, encoder_type: str = "GradualStyleEncoder",
                   size: int = 1024) -> dict:
    """A pSp/e4e ``.pt`` dict (``state_dict``, ``opts``, ``latent_avg``) filled by the recipe.

    ``opts`` holds only the keys the released files are known to carry for model construction, so loaders are
    exercised on the minimal, older form. ``size`` < 1024 gives a small checkpoint of the same format, as pSp's own
    code builds it for ``output_size`` (e4e: ``stylegan_size``) = size: the IR-SE50 encoder with the
    2·log2(size) − 2 style heads that size has, then the channel-multiplier-2 generator of that size
    (``stylegan2_generator_{size}_cm2.json``), in the official key order; the recipe indexes that list.
    """
    layout_dir = Path(layout_dir)
    entries = load_layout(layout_dir / "psp_ffhq_encode.state_dict.json")
    n_styles = 2 * int(np.log2(size)) - 2
    if size != 1024:
        generator = load_layout(layout_dir / f"stylegan2_generator_{size}_cm2.json")
        entries = [e for e in entries if e[0].startswith("encoder.") and _style_index(e[0]) < n_styles]
        entries += [(f"decoder.{k}", shape, dtype) for k, shape, dtype in generator]
    weights = make_weights([*entries, ("latent_avg", [n_styles, 512], "float32")], seed)
    latent_avg = weights.pop("latent_avg")
    opts: dict = {"encoder_type": encoder_type, "input_nc": 3, "start_from_latent_avg": True}
    if encoder_type == "Encoder4Editing":
        opts["stylegan_size"] = size
    elif size != 1024:
        opts["output_size"] = size
    return {"state_dict": weights, "opts": opts, "latent_avg": latent_avg}


def tolerance_excess(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-4, atol: float = 1e-4) -> float:
    """Largest ``|ours - ref| - (atol + rtol·|ref|)``; ≤ 0 means within the README §5 tolerance."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shape {ours.shape} != reference {ref.shape}")
    return float(np.max(np.abs(ours - ref) - (atol + rtol * np.abs(ref))))
