"""The bundle file format: packed (lossless, zlib) codec tensors, version 1 files, the storage-independent model id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sganc_stream.bundle import META_KEY, Bundle, bundle_info, load_bundle, pack_tensor, unpack_tensor
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
              metadata={META_KEY: json.dumps({"format": "sganc-bundle", "version": 3})})
    with pytest.raises(CheckpointError, match=r"unsupported bundle version 3 \(this build reads 1, 2\)"):
        load_bundle(tmp_path / "c.safetensors")
