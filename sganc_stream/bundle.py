"""The model file format: one safetensors file holding named parts plus a JSON config.

A bundle stores every tensor a stream needs under a part prefix (``generator.``, ``encoder.``,
``codec.``) and a JSON document in the safetensors metadata under the key ``sganc``. Its model id is
a SHA-256 over the config and every tensor (name, dtype, shape, bytes) in sorted name order, so it
does not depend on how the file was serialised; the bitstream header carries it.
Loading never unpickles anything: safetensors holds raw arrays only. Tensors are torch tensors, or numpy arrays
for :func:`load_bundle` ``(framework="numpy")``, which the torch-free decoder (:mod:`sganc_stream.onnx_runtime`)
uses; the model id is the same either way.

Version 2 files may store tensors of the parts in :data:`PACKED_PARTS` **packed** (lossless): the tensor's
little-endian bytes byte-shuffled (byte k of every element together, k = 0 … itemsize−1, as HDF5's/Blosc's shuffle
filter does), then zlib-compressed (RFC 1950, level 9), stored as a 1-D uint8 tensor under the same name; the
metadata entry ``packed`` maps each such name to its ``{"dtype", "shape"}``. A tensor is packed only when that is
smaller. Loading unpacks them, so every reader sees the same tensors as before and the model id (computed over the
unpacked tensors) does not depend on the storage: repacking a version 1 file keeps its id. Version 1 files (no
packing) still load. For the default face model this takes the codec part from 18.7 MB to 6.0 MB (the frozen
integer tables from 12.9 MB to 1.1 MB), bit-identical tables, so the streams and their bits do not change.

Version 3 adds a second packed form, **grid8**, for float tensors whose every row (the last axis; a 1-D tensor is one
row) lies on an 8-bit power-of-two grid: each value is ``c · 2^e`` with an integer code ``c`` in −127 … 127 and one
exponent ``e`` in −24 … 8 per row (exactly representable in float16 and float32, so unpacking is exact on any
machine). Stored: zlib of the R exponents (int8) followed by the R·K codes (int8, row-major); the entry says
``"form": "grid8"``. The writer uses it only for tensors that are exactly on that grid, so it is lossless too; what
puts the flow weights there is the explicit, lossy :func:`snap_to_grid8` (``benchmarks/table_storage.py
--write-compact``), which makes a new model (a new id). A file is written as version 3 only when it holds a grid8
entry, so every other file stays readable by version 2 builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
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
FORMAT_VERSION = 3  # 3: grid8 packed entries; 2: tensors of PACKED_PARTS may be packed; 1: raw tensors only
READ_VERSIONS = (1, 2, 3)
META_KEY = "sganc"
PACKED_KEY = "packed"  # metadata entry: {name: {"dtype": str, "shape": [int]}} of the packed tensors
PACKED_PARTS = ("codec",)  # frozen integer tables and float16 flow weights compress well losslessly
# dtype name (torch's, without "torch.") → bytes per element; bfloat16 has no numpy dtype (numpy readers refuse it)
_PACKABLE = {"uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "int64": 8, "float16": 2, "bfloat16": 2,
             "float32": 4, "float64": 8}
# numpy dtype name → torch dtype name, for hashing numpy arrays as their torch counterparts
_TORCH_NAMES = {"float64": "float64", "float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32",
                "int16": "int16", "int8": "int8", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
                "uint64": "uint64", "bool": "bool"}
# Bytes; a packed entry claiming more is refused before anything is inflated. The largest codec table a valid config
# allows (64 × 4096 channels × 256 symbols, uint16) is 128 MiB.
_MAX_UNPACKED = 1 << 28
GRID_FORM = "grid8"  # packed entry "form" of grid-coded float tensors (version 3); absent: byte-shuffled (version 2)
GRID_CODE_MAX = 127  # |code| of a grid8 value
GRID_EXP_RANGE = (-24, 8)  # per-row exponent: c·2^e is then exact in float16 (127·2^8 < 65504; 2^-24 its subnormal step)
_GRID_DTYPES = ("float16", "float32")


def pack_tensor(t: torch.Tensor) -> torch.Tensor:
    """Lossless packed form (1-D uint8) of a tensor: little-endian bytes byte-shuffled, then zlib level 9."""
    import torch

    raw = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    shuffled = raw.reshape(-1, t.element_size()).T.tobytes()
    return torch.frombuffer(bytearray(zlib.compress(shuffled, 9)), dtype=torch.uint8)


def unpack_tensor(packed: torch.Tensor | np.ndarray, dtype: str, shape: list[int],
                  name: str = "tensor", form: str | None = None) -> torch.Tensor | np.ndarray:
    """Inverse of :func:`pack_tensor` (``form`` None) or :func:`grid_pack` (``form="grid8"``), for torch or numpy
    input (the output is of the same kind); CheckpointError (one line) for a bad entry or data that does not inflate
    to exactly the bytes the entry implies (nothing larger is ever allocated), or a grid8 exponent or code out of
    range."""
    data = packed if isinstance(packed, np.ndarray) else packed.numpy()
    if (dtype not in _PACKABLE or not isinstance(shape, list) or len(shape) > 8
            or any(type(n) is not int or n < 0 for n in shape) or data.dtype != np.uint8 or data.ndim != 1
            or form not in (None, GRID_FORM) or (form == GRID_FORM and (dtype not in _GRID_DTYPES or not shape))):
        raise CheckpointError(f"{name}: malformed packed tensor entry")
    count = 1
    for n in shape:
        count *= n
    if form == GRID_FORM:
        n_rows = count // shape[-1] if shape[-1] else 0
        if count * 4 > _MAX_UNPACKED:  # the float32 values made below
            raise CheckpointError(f"{name}: packed tensor too large ({count * 4} bytes)")
        out = np.frombuffer(_inflate_exact(data, n_rows + count, name), dtype=np.int8)
        e, codes = out[:n_rows], out[n_rows:].reshape(n_rows, shape[-1] if n_rows else 0)
        if (e < GRID_EXP_RANGE[0]).any() or (e > GRID_EXP_RANGE[1]).any() or (codes < -GRID_CODE_MAX).any():
            raise CheckpointError(f"{name}: grid8 exponent or code out of range")
        # c · 2^e is exact in float32 (|c| <= 127, 2^-24 <= 2^e <= 2^8), and so in float16
        arr = (codes.astype(np.float32) * np.exp2(e.astype(np.float32))[:, None]).astype(dtype).reshape(shape)
        if isinstance(packed, np.ndarray):
            return arr
        import torch

        return torch.from_numpy(arr)
    itemsize = _PACKABLE[dtype]
    out = _inflate_exact(data, count * itemsize, name)
    raw = np.frombuffer(out, dtype=np.uint8).reshape(itemsize, count).T.copy().reshape(-1)
    if isinstance(packed, np.ndarray):
        if dtype == "bfloat16":
            raise CheckpointError(f"{name}: bfloat16 tensors need torch (numpy has no bfloat16)")
        return raw.view(np.dtype(dtype).newbyteorder("<")).reshape(shape)
    import torch

    return torch.from_numpy(raw).view(getattr(torch, dtype)).reshape(shape)


def _rows(a: np.ndarray) -> np.ndarray:
    """(R, K) float64 view of a tensor's rows: the last axis, a 1-D tensor being one row."""
    return a.astype(np.float64).reshape(-1, a.shape[-1] if a.ndim else 1)


def _grid_exponents(rows: np.ndarray) -> np.ndarray:
    """(R,) int64: per row the smallest exponent >= GRID_EXP_RANGE[0] with max |row| / 2^e <= GRID_CODE_MAX (above
    GRID_EXP_RANGE[1] for a row the grid cannot hold)."""
    m = np.abs(rows).max(axis=1, initial=0.0)
    with np.errstate(divide="ignore"):
        e = np.ceil(np.log2(m / GRID_CODE_MAX))
    e = np.maximum(np.nan_to_num(e, neginf=GRID_EXP_RANGE[0]), GRID_EXP_RANGE[0]).astype(np.int64)
    e += np.abs(np.round(rows / np.exp2(e)[:, None])).max(axis=1, initial=0.0) > GRID_CODE_MAX  # log2 rounding
    return e


def snap_to_grid8(t: torch.Tensor) -> torch.Tensor:
    """The nearest values (round half to even) on the grid8 grid of each row, same dtype and shape (lossy: the
    tensor becomes storable in grid8 form, about 8 bits a value packed). float16/float32 only; ValueError for
    another dtype, a non-finite value, or a row whose largest |value| exceeds 127 · 2^8 (beyond the grid)."""
    import torch

    a = t.detach().cpu().numpy()
    if str(t.dtype).removeprefix("torch.") not in _GRID_DTYPES or not np.isfinite(a).all():
        raise ValueError("snap_to_grid8 takes finite float16 or float32 tensors")
    rows = _rows(a)
    e = _grid_exponents(rows)
    if (e > GRID_EXP_RANGE[1]).any():
        raise ValueError(f"values beyond the grid8 range (|x| <= {GRID_CODE_MAX} * 2^{GRID_EXP_RANGE[1]})")
    codes = np.round(rows / np.exp2(e)[:, None]) + 0.0  # + 0.0: no negative zeros (the grid stores none)
    return torch.from_numpy((codes * np.exp2(e)[:, None]).reshape(a.shape).astype(a.dtype))


def grid_pack(t: torch.Tensor) -> torch.Tensor | None:
    """grid8 packed form (1-D uint8) of a float16/float32 tensor exactly on the grid, else None (module docstring)."""
    import torch

    if str(t.dtype).removeprefix("torch.") not in _GRID_DTYPES or t.dim() == 0:
        return None
    a = t.detach().cpu().numpy()
    if not np.isfinite(a).all() or np.signbit(a[a == 0]).any():  # a negative zero would come back positive
        return None
    rows = _rows(a)
    e = _grid_exponents(rows)
    scaled = rows / np.exp2(e)[:, None]  # exact: a power-of-two scaling of float64
    if (e > GRID_EXP_RANGE[1]).any() or not np.array_equal(np.round(scaled), scaled):
        return None
    data = e.astype(np.int8).tobytes() + scaled.astype(np.int8).tobytes()
    return torch.frombuffer(bytearray(zlib.compress(data, 9)), dtype=torch.uint8)


def _inflate_exact(data: np.ndarray, size: int, name: str) -> bytes:
    """Inflate a zlib stream that must hold exactly ``size`` bytes (CheckpointError otherwise; never more is made)."""
    if size > _MAX_UNPACKED:
        raise CheckpointError(f"{name}: packed tensor too large ({size} bytes)")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data.tobytes(), size)
    except zlib.error:
        raise CheckpointError(f"{name}: packed tensor data is not a zlib stream") from None
    if len(out) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise CheckpointError(f"{name}: packed tensor data does not hold exactly {size} bytes")
    return out


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


def content_hash(tensors: dict[str, torch.Tensor] | dict[str, np.ndarray], config: dict[str, Any]) -> str:
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

    def save(self, path: str | os.PathLike[str], *, packed: bool = True) -> None:
        """Write atomically: a crash or full disk never leaves a half-written bundle under ``path``.

        ``packed``: store tensors of :data:`PACKED_PARTS` packed, in the smallest lossless form (module docstring),
        where that is smaller than raw: format version 3 if a tensor is grid8-packed, else 2; False writes format
        version 1, raw tensors, as builds before version 2 read."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        entries: dict[str, dict[str, Any]] = {}
        for name, t in tensors.items():
            dtype = str(t.dtype).removeprefix("torch.")
            if not (packed and name.split(".", 1)[0] in PACKED_PARTS and dtype in _PACKABLE and t.numel()):
                continue
            forms = [(pack_tensor(t), {}), (grid_pack(t), {"form": GRID_FORM})]
            p, extra = min(((p, x) for p, x in forms if p is not None), key=lambda px: px[0].numel())
            if p.numel() < t.numel() * t.element_size():
                entries[name] = {"dtype": dtype, "shape": list(t.shape), **extra}
                tensors[name] = p
        version = FORMAT_VERSION if any("form" in e for e in entries.values()) else 2
        config = ({"format": FORMAT, "version": version, **self.config, PACKED_KEY: entries} if packed
                  else {"format": FORMAT, "version": 1, **self.config})
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
    cfg, packed = _header(path)  # validates the header
    model_hash = ContentHasher(cfg)
    enc_cfg = cfg.get("encoder") if isinstance(cfg.get("encoder"), dict) else None
    enc_hash = _encoder_hasher(enc_cfg) if enc_cfg is not None and not enc_cfg.get("weights_id") else None
    parts: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in sorted(f.keys()):
                stored = f.get_tensor(name)
                t = _unpacked(path, name, stored, packed)
                model_hash.add(name, t)
                prefix = name.split(".", 1)[0]
                part = parts.setdefault(prefix, {"tensors": 0, "parameters": 0, "bytes": 0, "stored_bytes": 0, "dtypes": []})
                part["tensors"] += 1
                part["parameters"] += t.numel()
                part["bytes"] += t.numel() * t.element_size()
                part["stored_bytes"] += stored.numel() * stored.element_size()
                part["dtypes"] = sorted({*part["dtypes"], str(t.dtype).removeprefix("torch.")})
                if prefix == "encoder" and enc_hash is not None:
                    enc_hash.add(name[len("encoder."):], _as_f32(t))
    except CheckpointError:
        raise
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
    """Read a bundle (packed tensors unpacked), as torch tensors (``framework="pt"``) or numpy arrays (``"numpy"``:
    no torch import); any unreadable or foreign file raises :class:`CheckpointError` in one line."""
    path = Path(path)
    config, packed = _header(path)
    try:
        with safe_open(str(path), framework=framework) as f:
            names = list(f.keys())
            tensors = {k: _unpacked(path, k, f.get_tensor(k), packed) for k in names}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises several types for damaged data
        raise CheckpointError(f"{path}: not a readable safetensors model file ({type(exc).__name__})") from None
    if set(packed) - set(names):
        raise CheckpointError(f"{path}: packed tensor entries name tensors the file lacks")
    return Bundle(tensors=tensors, config=config)


def bundle_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A bundle's config alone (its header is read, not its tensors); errors as :func:`load_bundle`."""
    return _header(Path(path))[0]


def _unpacked(path: Path, name: str, t: torch.Tensor | np.ndarray, packed: dict[str, Any]) -> torch.Tensor | np.ndarray:
    if name not in packed:
        return t
    entry = packed[name]
    if not isinstance(entry, dict) or name.split(".", 1)[0] not in PACKED_PARTS:
        raise CheckpointError(f"{path}: {name}: malformed packed tensor entry")
    return unpack_tensor(t, entry.get("dtype"), entry.get("shape"), f"{path}: {name}", entry.get("form"))


def _header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config without format/version/packed, the packed-tensor map), validated."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: no torch needed
            meta = f.metadata() or {}
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
    if config.get("version") not in READ_VERSIONS:
        raise CheckpointError(f"{path}: unsupported bundle version {config.get('version')!r} "
                              f"(this build reads {', '.join(map(str, READ_VERSIONS))})")
    packed = config.get(PACKED_KEY, {}) if config["version"] >= 2 else {}
    if not isinstance(packed, dict):
        raise CheckpointError(f"{path}: malformed packed tensor map")
    if config["version"] < 3 and any(isinstance(e, dict) and "form" in e for e in packed.values()):
        raise CheckpointError(f"{path}: packed tensor forms need bundle version 3, the file says {config['version']}")
    return {k: v for k, v in config.items() if k not in ("format", "version", PACKED_KEY)}, packed
