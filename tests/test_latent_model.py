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


def test_empirical_residual_tables_are_stored_and_checked(tiny_codec, tiny_codec_path, tmp_path):
    again = load_latent_codec(tiny_codec_path)
    assert sorted(again.empirical_residuals) == sorted(tiny_codec.empirical_residuals) != []
    for g, tables in tiny_codec.empirical_residuals.items():
        for a, b in zip(again.empirical_residuals[g], tables):
            assert a.shared and np.array_equal(a.freqs, b.freqs) and np.array_equal(a.offsets, b.offsets)
    b = load_bundle(tiny_codec_path)
    assert b.config["codec"]["empirical_residual_g"] == sorted(tiny_codec.empirical_residuals)
    cases = [  # (tensors, codec config changes, message)
        ({k: v for k, v in b.tensors.items() if "tables.residual.10.1." not in k}, {}, "malformed latent codec"),
        (b.tensors, {"empirical_residual_g": [10, 10]}, "config out of range"),
        (b.tensors, {"empirical_residual_g": [0]}, "config out of range"),
        (b.tensors, {"empirical_residual_g": "10"}, "config out of range"),
        ({**b.tensors, "codec.tables.residual.10.1.offsets": torch.tensor([-3], dtype=torch.int32)}, {},
         "does not have its period's support"),
    ]
    for i, (tensors, change, message) in enumerate(cases):
        Bundle(tensors, {**b.config, "codec": {**b.config["codec"], **change}}).save(tmp_path / f"{i}.safetensors")
        with pytest.raises(CheckpointError, match=message):
            load_latent_codec(tmp_path / f"{i}.safetensors")
    without = {k: v for k, v in b.tensors.items() if ".residual." not in k}
    config = {**b.config, "codec": {k: v for k, v in b.config["codec"].items() if k != "empirical_residual_g"}}
    Bundle(without, config).save(tmp_path / "none.safetensors")
    plain = load_latent_codec(tmp_path / "none.safetensors")
    assert plain.empirical_residuals == {}
    with pytest.raises(InputError, match=r"no empirical residual table for g = 10 \(periods it has: none\)"):
        plain.residual_table(10, 1, "empirical")
