"""The model file format: one safetensors file holding named parts plus a JSON config.

A bundle stores every tensor a stream needs under a part prefix (``generator.``, ``encoder.``,
``codec.``) and a JSON document in the safetensors metadata under the key ``sganc``. Its model id is
a SHA-256 over the config and every tensor (name, dtype, shape, bytes) in sorted name order, so it
does not depend on how the file was serialised; the bitstream header carries it.
Loading never unpickles anything: safetensors holds raw arrays only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sganc_stream.errors import CheckpointError
from sganc_stream.fileio import atomic_output

FORMAT = "sganc-bundle"
FORMAT_VERSION = 1
META_KEY = "sganc"


def content_hash(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """SHA-256 hex digest of a config and tensors, independent of file layout."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Bundle:
    """Tensors by full name and the config dict; ``part(name)`` gives one part without its prefix."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return content_hash(self.tensors, self.config)

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
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(config, sort_keys=True)})


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle; any unreadable or foreign file raises :class:`CheckpointError` in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
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
