"""The model file format: one safetensors file holding named parts plus a JSON config.

A bundle stores every tensor a stream needs under a part prefix (``generator.``, ``encoder.``,
``codec.``) and a JSON document in the safetensors metadata under the key ``sganc``. Its model id is
a SHA-256 over the config and every tensor (name, dtype, shape, bytes) in sorted name order, so it
does not depend on how the file was serialised; the bitstream header carries it.
Loading never unpickles anything: safetensors holds raw arrays only. Tensors are torch tensors, or numpy arrays
for :func:`load_bundle` ``(framework="numpy")``, which the torch-free decoder (:mod:`sganc_stream.onnx_runtime`)
uses; the model id is the same either way.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import safe_open

from sganc_stream.errors import CheckpointError
from sganc_stream.fileio import atomic_output

if TYPE_CHECKING:
    import torch

FORMAT = "sganc-bundle"
FORMAT_VERSION = 1
META_KEY = "sganc"


# numpy dtype name → torch dtype name, for hashing numpy arrays as their torch counterparts (bfloat16 has no numpy
# dtype: safetensors' numpy reader refuses such files, and the torch path hashes them)
_TORCH_NAMES = {"float64": "float64", "float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32",
                "int16": "int16", "int8": "int8", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
                "uint64": "uint64", "bool": "bool"}


class ContentHasher:
    """:func:`content_hash` fed one tensor at a time (in sorted name order), so a file need not be held in memory."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._h = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())

    def add(self, name: str, tensor: torch.Tensor | np.ndarray) -> None:
        """Hash one tensor: its name, dtype (torch's name, e.g. ``torch.float16``, for numpy arrays too), shape and
        bytes (little-endian, C order)."""
        if isinstance(tensor, np.ndarray):
            if tensor.dtype.byteorder == ">":
                tensor = tensor.astype(tensor.dtype.newbyteorder("<"))
            dtype, shape, data = f"torch.{_TORCH_NAMES[tensor.dtype.name]}", tuple(tensor.shape), np.ascontiguousarray(tensor)
        else:
            import torch

            t = tensor.detach().contiguous().cpu()
            dtype, shape, data = str(t.dtype), tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy()
        self._h.update(name.encode() + b"\0" + dtype.encode() + b"\0" + str(shape).encode() + b"\0")
        self._h.update(data.tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def content_hash(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """SHA-256 hex digest of a config and tensors, independent of file layout."""
    h = ContentHasher(config)
    for name in sorted(tensors):
        h.add(name, tensors[name])
    return h.hexdigest()


def encoder_id(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """Content hash of one encoder: its weights as float32 (names without the ``encoder.`` prefix) and its config.

    A latent codec records the id of the encoder whose W+ it was trained on (``codec.info.encoder_id``), so a bundle
    can refuse a codec made for another encoder. Float16 storage of float32 weights changes them, so a bundle that
    stores a cast copy keeps the original's id in ``config['weights_id']`` (returned as is, and never hashed).
    """
    if config.get("weights_id"):
        return str(config["weights_id"])
    h = _encoder_hasher(config)
    for name in sorted(tensors):
        h.add(name, _as_f32(tensors[name]))
    return h.hexdigest()


def _encoder_hasher(config: dict[str, Any]) -> ContentHasher:
    return ContentHasher({k: v for k, v in config.items() if k != "weights_id"})


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


@dataclass
class Bundle:
    """Tensors by full name and the config dict; ``part(name)`` gives one part without its prefix."""

    tensors: dict[str, torch.Tensor] | dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return content_hash(self.tensors, self.config)

    @property
    def encoder_id(self) -> str | None:
        """:func:`encoder_id` of the ``encoder`` part; None without one."""
        if "encoder" not in self.config or not self.has_part("encoder"):
            return None
        return encoder_id(self.part("encoder"), self.config["encoder"])

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix.rstrip(".") + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def has_part(self, prefix: str) -> bool:
        p = prefix.rstrip(".") + "."
        return any(k.startswith(p) for k in self.tensors)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a crash or full disk never leaves a half-written bundle under ``path``."""
        config = {"format": FORMAT, "version": FORMAT_VERSION, **self.config}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        from safetensors.torch import save_file

        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(config, sort_keys=True)})


def is_bundle_file(path: str | os.PathLike[str]) -> bool:
    """True for a safetensors file (a bundle candidate), judged by its first bytes, not its name."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def usage(config: dict[str, Any]) -> str:
    """What a bundle with this config can do, in words (with the next step where it cannot transcode)."""
    has = {k for k in ("generator", "encoder", "codec") if k in config}
    if has == {"codec"}:
        return "latent codec only: codes W+ .npy sequences (`latents`); merge it into a face model with build-face-bundle"
    if "generator" not in has:
        return "not a face model (no generator)"
    if "codec" not in has:
        if "encoder" in has:
            return "generator and encoder, no latent codec yet: cannot transcode; add one with `sganc-stream complete-bundle`"
        return "generator only: cannot encode faces or code latents"
    return "transcode and decode" if "encoder" in has else "decode only (no encoder)"


def bundle_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``sganc-stream inspect`` shows for a bundle: model id, parts with sizes, licence, encoder fit.

    Tensors are read and hashed one at a time: memory stays at about one tensor, whatever the file's size.
    """
    path = Path(path)
    cfg = bundle_config(path)  # validates the header
    model_hash = ContentHasher(cfg)
    enc_cfg = cfg.get("encoder") if isinstance(cfg.get("encoder"), dict) else None
    enc_hash = _encoder_hasher(enc_cfg) if enc_cfg is not None and not enc_cfg.get("weights_id") else None
    parts: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in sorted(f.keys()):
                t = f.get_tensor(name)
                model_hash.add(name, t)
                prefix = name.split(".", 1)[0]
                part = parts.setdefault(prefix, {"tensors": 0, "parameters": 0, "bytes": 0, "dtypes": []})
                part["tensors"] += 1
                part["parameters"] += t.numel()
                part["bytes"] += t.numel() * t.element_size()
                part["dtypes"] = sorted({*part["dtypes"], str(t.dtype).removeprefix("torch.")})
                if prefix == "encoder" and enc_hash is not None:
                    enc_hash.add(name[len("encoder."):], _as_f32(t))
    except Exception as exc:  # safetensors raises several types for damaged data
        raise CheckpointError(f"{path}: not a readable safetensors model file ({type(exc).__name__})") from None
    for key in ("generator", "encoder", "codec"):
        if key in cfg and key in parts:
            parts[key]["config"] = cfg[key]
    enc_id = None
    if "encoder" in parts and enc_cfg is not None:
        enc_id = enc_hash.hexdigest() if enc_hash is not None else str(enc_cfg["weights_id"])
        parts["encoder"]["encoder_id"] = enc_id
    if "codec" in parts and isinstance(cfg.get("codec"), dict):
        info = cfg["codec"].get("info") or {}
        trained_for = info.get("encoder_id") if isinstance(info, dict) else None
        parts["codec"]["trained_for_encoder"] = trained_for
        parts["codec"]["fit"] = ("not recorded" if trained_for is None else "no encoder here" if enc_id is None
                                 else "matches the encoder" if trained_for == enc_id else "another encoder (forced)")
    return {"file": str(path), "file_bytes": path.stat().st_size, "model_id": model_hash.hexdigest(),
            "licence": cfg.get("licence", ""), "use": usage(cfg), "parts": parts,
            "alignment": cfg.get("alignment"), "training": cfg.get("training")}


def load_bundle(path: str | os.PathLike[str], framework: str = "pt") -> Bundle:
    """Read a bundle, as torch tensors (``framework="pt"``) or numpy arrays (``"numpy"``: no torch import); any
    unreadable or foreign file raises :class:`CheckpointError` in one line."""
    return _read(Path(path), with_tensors=True, framework=framework)


def bundle_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A bundle's config alone (its header is read, not its tensors); errors as :func:`load_bundle`."""
    return _read(Path(path), with_tensors=False).config


def _read(path: Path, with_tensors: bool, framework: str = "numpy") -> Bundle:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework=framework) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as exc:  # safetensors raises several types for damaged headers
        raise CheckpointError(f"{path}: not a readable safetensors model file ({type(exc).__name__})") from None
    if META_KEY not in meta:
        raise CheckpointError(f"{path}: safetensors file without sganc metadata (not a sganc-stream bundle)")
    try:
        config = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, RecursionError):  # RecursionError: deeply nested JSON
        raise CheckpointError(f"{path}: bundle metadata is not valid JSON") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: bundle metadata is not a JSON object")
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown bundle format {config.get('format')!r}")
    if config.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported bundle version {config.get('version')!r} (this build reads {FORMAT_VERSION})")
    config = {k: v for k, v in config.items() if k not in ("format", "version")}
    return Bundle(tensors=tensors, config=config)
