import numpy as np
import pytest
import torch

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.latent.model import load_latent_codec

from conftest import TINY_ROWS, TINY_WIDTH


def test_reload_gives_same_model_and_id(tiny_codec, tiny_codec_path):
    again = load_latent_codec(tiny_codec_path)
    assert again.model_id == tiny_codec.model_id == load_bundle(tiny_codec_path).model_id
    w = np.random.default_rng(0).standard_normal((TINY_ROWS, TINY_WIDTH)).astype(np.float32)
    assert np.array_equal(again.to_proxy(w), tiny_codec.to_proxy(w))
    for kind in ("intra", "diff"):
        for a, b in zip(again.tables[kind], tiny_codec.tables[kind]):
            assert np.array_equal(a.freqs, b.freqs) and np.array_equal(a.offsets, b.offsets)


def test_stored_flow_weights_are_float16(tiny_codec_path):
    flow = {k: v for k, v in load_bundle(tiny_codec_path).tensors.items() if ".flow." in k}
    assert flow and all(v.dtype == torch.float16 for v in flow.values())


def test_model_id_changes_with_any_table(tiny_codec_path, tmp_path):
    b = load_bundle(tiny_codec_path)
    key = next(k for k in b.tensors if k.endswith("freqs"))
    t = b.tensors[key].int()
    t[0, 0] += 1
    t[0, 1] -= 1
    t = t.to(torch.uint16)
    assert Bundle({**b.tensors, key: t}, b.config).model_id != b.model_id


def test_step_presets(tiny_codec):
    assert tiny_codec.steps == [0.25, 0.5, 1.0]
    assert tiny_codec.step_index(None) == 1 and tiny_codec.step_index(1.0) == 2
    with pytest.raises(InputError, match="presets"):
        tiny_codec.step_index(0.3)


def test_malformed_codec_rejected(tiny_codec_path, tmp_path):
    b = load_bundle(tiny_codec_path)
    broken = {k: v for k, v in b.tensors.items() if "tables.diff.0" not in k}
    Bundle(broken, b.config).save(tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="malformed latent codec"):
        load_latent_codec(tmp_path / "broken.safetensors")
    Bundle({"generator.x": torch.zeros(1)}, {}).save(tmp_path / "nocodec.safetensors")
    with pytest.raises(CheckpointError, match="no latent codec"):
        load_latent_codec(tmp_path / "nocodec.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError):
        load_latent_codec(tmp_path / "junk.safetensors")
