"""The bundle file format: packed (lossless, zlib) codec tensors, version 1 files, the storage-independent model id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sganc_stream.bundle import (META_KEY, Bundle, bundle_info, grid_pack, load_bundle, pack_tensor, snap_to_grid8,
                                  unpack_tensor)
from sganc_stream.errors import CheckpointError


def _tensors() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    freqs = np.ones((64, 40), dtype=np.uint16)  # table-like: mostly 1, a peak per row
    freqs[:, 18:22] = rng.integers(1000, 20000, (64, 4))
    return {
        "codec.tables.intra.0.freqs": torch.from_numpy(freqs),
        "codec.tables.intra.0.offsets": torch.from_numpy(rng.integers(-50, 0, 64).astype(np.int32)),
        "codec.flow.0.w": torch.from_numpy(rng.normal(size=(32, 16)).astype(np.float16)),
        "codec.tiny": torch.tensor([7], dtype=torch.int32),  # packing would not be smaller: stored raw
        "generator.w": torch.from_numpy(np.ones((50, 50), dtype=np.float32)),  # not a packed part
    }


def _write_v1(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    save_file(tensors, str(path), metadata={META_KEY: json.dumps({"format": "sganc-bundle", "version": 1, **config})})


def test_codec_tensors_are_packed_losslessly_and_the_model_id_ignores_storage(tmp_path: Path) -> None:
    tensors, config = _tensors(), {"codec": {"rows": 1}}
    _write_v1(tmp_path / "v1.safetensors", tensors, config)
    Bundle(tensors, config).save(tmp_path / "v2.safetensors")
    old, new = load_bundle(tmp_path / "v1.safetensors"), load_bundle(tmp_path / "v2.safetensors")
    assert set(new.tensors) == set(tensors) and new.config == old.config == config
    for name, t in tensors.items():
        assert new.tensors[name].dtype == old.tensors[name].dtype == t.dtype and torch.equal(new.tensors[name], t)
    assert new.model_id == old.model_id == Bundle(tensors, config).model_id
    info = bundle_info(tmp_path / "v2.safetensors")
    assert info["model_id"] == new.model_id
    codec = info["parts"]["codec"]
    assert codec["bytes"] == sum(t.numel() * t.element_size() for n, t in tensors.items() if n.startswith("codec."))
    assert codec["stored_bytes"] < codec["bytes"] / 2  # the table compresses to a fraction
    assert info["parts"]["generator"]["stored_bytes"] == info["parts"]["generator"]["bytes"]
    assert (tmp_path / "v2.safetensors").stat().st_size < (tmp_path / "v1.safetensors").stat().st_size


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int32, torch.float16, torch.float32, torch.int64])
def test_pack_round_trip(dtype: torch.dtype) -> None:
    t = (torch.arange(-300, 300).reshape(20, 30) * 37).to(dtype)
    p = pack_tensor(t)
    assert p.dtype == torch.uint8 and p.dim() == 1
    u = unpack_tensor(p, str(dtype).removeprefix("torch."), [20, 30])
    assert u.dtype == dtype and torch.equal(u, t)


@pytest.mark.parametrize("edit, message", [
    (lambda p, e: (p[:-3], e), "does not hold exactly"),
    (lambda p, e: (torch.cat([p, p[:4]]), e), "does not hold exactly"),
    (lambda p, e: (torch.zeros_like(p), e), "not a zlib stream"),
    (lambda p, e: (p, {**e, "shape": [64, 41]}), "does not hold exactly"),
    (lambda p, e: (p, {**e, "shape": [1 << 20, 1 << 20]}), "too large"),
    (lambda p, e: (p, {**e, "dtype": "object"}), "malformed packed tensor entry"),
    (lambda p, e: (p, {**e, "shape": [-1, 2]}), "malformed packed tensor entry"),
])
def test_damaged_packed_tensor_is_one_line_error(tmp_path: Path, edit, message: str) -> None:
    name = "codec.tables.intra.0.freqs"
    t = _tensors()[name]
    packed, entry = edit(pack_tensor(t), {"dtype": "uint16", "shape": [64, 40]})
    meta = {"format": "sganc-bundle", "version": 2, "packed": {name: entry}}
    save_file({name: packed}, str(tmp_path / "b.safetensors"), metadata={META_KEY: json.dumps(meta)})
    for read in (load_bundle, bundle_info):
        with pytest.raises(CheckpointError, match=message) as err:
            read(tmp_path / "b.safetensors")
        assert "\n" not in str(err.value)


def test_only_codec_tensors_may_be_packed(tmp_path: Path) -> None:
    t = torch.zeros(100, dtype=torch.float16)
    meta = {"format": "sganc-bundle", "version": 2, "packed": {"generator.w": {"dtype": "float16", "shape": [100]}}}
    save_file({"generator.w": pack_tensor(t)}, str(tmp_path / "b.safetensors"), metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match="generator.w: malformed packed tensor entry"):
        load_bundle(tmp_path / "b.safetensors")


def test_packed_entry_for_a_missing_tensor_and_unknown_version_are_refused(tmp_path: Path) -> None:
    meta = {"format": "sganc-bundle", "version": 2, "packed": {"codec.x": {"dtype": "uint16", "shape": [1]}}}
    save_file({"codec.y": torch.zeros(2)}, str(tmp_path / "b.safetensors"), metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match="name tensors the file lacks"):
        load_bundle(tmp_path / "b.safetensors")
    save_file({"codec.y": torch.zeros(2)}, str(tmp_path / "c.safetensors"),
              metadata={META_KEY: json.dumps({"format": "sganc-bundle", "version": 4})})
    with pytest.raises(CheckpointError, match=r"unsupported bundle version 4 \(this build reads 1, 2, 3\)"):
        load_bundle(tmp_path / "c.safetensors")


def test_snapped_float_tensors_are_grid8_packed_exactly_and_keep_their_model_id(tmp_path: Path) -> None:
    """snap_to_grid8 is the lossy step; storing its result (grid8, version 3) is lossless, and the model id is the
    one of the same tensors stored raw (version 1)."""
    tensors, config = _tensors(), {"codec": {"rows": 1}}
    w = tensors["codec.flow.0.w"]
    snapped = snap_to_grid8(w)
    err = (snapped.float() - w.float()).abs()
    assert snapped.dtype == w.dtype and err.max() > 0 and (err <= w.float().abs().amax(1, keepdim=True) / 127).all()
    assert grid_pack(w) is None and grid_pack(torch.tensor([1.0, -0.0])) is None  # off the grid; a negative zero
    assert torch.equal(unpack_tensor(grid_pack(snapped), "float16", [32, 16], form="grid8"), snapped)
    tensors["codec.flow.0.w"] = snapped
    tensors["codec.flow.0.b"] = snap_to_grid8(torch.tensor([3.0, -0.001, 0.0, 1e-9], dtype=torch.float32))
    Bundle(tensors, config).save(tmp_path / "v3.safetensors")
    _write_v1(tmp_path / "v1.safetensors", tensors, config)
    meta = json.loads(json.loads((tmp_path / "v3.safetensors").read_bytes()[8:8 + int.from_bytes(
        (tmp_path / "v3.safetensors").read_bytes()[:8], "little")])["__metadata__"][META_KEY])
    assert meta["version"] == 3 and meta["packed"]["codec.flow.0.w"]["form"] == "grid8"
    new, old = load_bundle(tmp_path / "v3.safetensors"), load_bundle(tmp_path / "v1.safetensors")
    for name, t in tensors.items():
        assert new.tensors[name].dtype == t.dtype and torch.equal(new.tensors[name], t)
    assert new.model_id == old.model_id == bundle_info(tmp_path / "v3.safetensors")["model_id"]
    assert load_bundle(tmp_path / "v3.safetensors", framework="numpy").model_id == new.model_id
    Bundle(_tensors(), config).save(tmp_path / "v2.safetensors")  # nothing on the grid: still version 2
    assert load_bundle(tmp_path / "v2.safetensors").config == config
    assert b'\\"version\\":2' in (tmp_path / "v2.safetensors").read_bytes()[:4096].replace(b" ", b"")


def test_snap_refuses_what_the_grid_cannot_hold() -> None:
    with pytest.raises(ValueError, match="beyond the grid8 range"):
        snap_to_grid8(torch.tensor([40000.0]))
    with pytest.raises(ValueError, match="finite float16 or float32"):
        snap_to_grid8(torch.tensor([1, 2], dtype=torch.int32))


@pytest.mark.parametrize("version, stored, message", [
    (3, lambda e, c: bytes([e & 0xFF]) + bytes([c & 0xFF] * 4), None),
    (3, lambda e, c: bytes([(-25) & 0xFF]) + bytes([1] * 4), "exponent or code out of range"),
    (3, lambda e, c: bytes([9]) + bytes([1] * 4), "exponent or code out of range"),
    (3, lambda e, c: bytes([0]) + bytes([0x80] * 4), "exponent or code out of range"),  # code -128
    (3, lambda e, c: bytes([0]) + bytes([1] * 5), "does not hold exactly"),
    (2, lambda e, c: bytes([0]) + bytes([1] * 4), "forms need bundle version 3"),
])
def test_grid8_entries_are_checked(tmp_path: Path, version: int, stored, message: str | None) -> None:
    import zlib

    name = "codec.flow.0.b"
    data = torch.frombuffer(bytearray(zlib.compress(stored(-3, 5))), dtype=torch.uint8)
    meta = {"format": "sganc-bundle", "version": version,
            "packed": {name: {"dtype": "float16", "shape": [4], "form": "grid8"}}}
    save_file({name: data}, str(tmp_path / "b.safetensors"), metadata={META_KEY: json.dumps(meta)})
    if message is None:
        assert torch.equal(load_bundle(tmp_path / "b.safetensors").tensors[name], torch.full((4,), 5 / 8, dtype=torch.float16))
        return
    for read in (load_bundle, bundle_info):
        with pytest.raises(CheckpointError, match=message) as err:
            read(tmp_path / "b.safetensors")
        assert "\n" not in str(err.value)
