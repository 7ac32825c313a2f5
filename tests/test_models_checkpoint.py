"""Checkpoint loading: official layouts, bundles, and one-line errors for bad or unsafe files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.errors import CheckpointError
from sganc_stream.models import FastEncoder, FastEncoderConfig, Generator, GeneratorConfig, load_checkpoint, save_model_bundle
from sganc_stream.models.checkpoint import read_torch_file
from sganc_stream.models.recipe import load_layout, make_weights, psp_checkpoint, tolerance_excess

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def need_reference() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")


def g64_state(seed: int = 1) -> dict[str, torch.Tensor]:
    return make_weights(load_layout(REFERENCE / "layouts" / "stylegan2_generator_64_cm2.json"), seed)


@pytest.fixture()
def rosinality_pt(tmp_path: Path) -> Path:
    need_reference()
    path = tmp_path / "stylegan2-64.pt"
    torch.save({"g_ema": g64_state(), "latent_avg": torch.linspace(-1, 1, 512)}, path)
    return path


def test_rosinality_file_loads_and_reproduces_reference(rosinality_pt: Path) -> None:
    model = load_checkpoint(rosinality_pt)
    ref = np.load(REFERENCE / "vectors" / "generator64_cm2_seed1.npz")
    assert model.encoder is None and model.source == "rosinality"
    assert model.generator.config == GeneratorConfig(size=64)
    assert model.config["generator"]["rows"] == 10
    assert torch.equal(model.w_avg, torch.linspace(-1, 1, 512))
    with torch.inference_mode():
        assert tolerance_excess(model.generator(torch.from_numpy(ref["wplus"])).numpy(), ref["image"]) <= 0
        assert tolerance_excess(model.generator.mapping(torch.from_numpy(ref["z"])).numpy(), ref["w"]) <= 0


def test_official_stylegan2_ffhq_layout_file_loads(tmp_path: Path) -> None:
    """stylegan2-ffhq-config-f.pt layout: size and channel multiplier inferred, every tensor adopted as stored."""
    need_reference()
    state = make_weights(load_layout(REFERENCE / "layouts" / "stylegan2_generator_1024_cm2.json"), seed=2)
    torch.save({"g_ema": state, "latent_avg": torch.zeros(512)}, tmp_path / "stylegan2-ffhq-config-f.pt")
    model = load_checkpoint(tmp_path / "stylegan2-ffhq-config-f.pt")
    assert model.generator.config == GeneratorConfig(size=1024, channel_multiplier=2)
    loaded = model.generator.state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.slow
def test_official_psp_layout_file_loads_and_reproduces_reference(tmp_path: Path) -> None:
    """psp_ffhq_encode.pt layout, minimal (old) opts: strict load, then the public API reproduces pSp and e4e."""
    need_reference()
    for name, opts_type in (("psp", "GradualStyleEncoder"), ("e4e", "Encoder4Editing")):
        path = tmp_path / f"{name}_ffhq_encode.pt"
        torch.save(psp_checkpoint(REFERENCE / "layouts", seed=1, encoder_type=opts_type), path)
        ref = np.load(REFERENCE / "vectors" / f"{name}_ffhq_encode_seed1.npz")
        model = load_checkpoint(path)
        assert model.source == name and model.config["encoder"]["type"] == name
        x = torch.from_numpy(ref["x"])
        with torch.inference_mode():
            wplus = model.encoder(x)
            codes = wplus - model.encoder.latent_avg
            assert wplus.shape == (1, 18, 512)
            assert tolerance_excess(codes.numpy(), ref["codes"]) <= 0
            if name == "psp":  # one 1024 decode suffices here; test_models_encoders checks both
                image = F.adaptive_avg_pool2d(model.generator(wplus), (256, 256))
                assert tolerance_excess(image.numpy(), ref["psp_image"]) <= 0
        del model
        path.unlink()


def test_bundle_round_trip_keeps_outputs_and_foreign_parts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=64)).eval()
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10)).eval()
    e.latent_avg.normal_()
    path = tmp_path / "model.safetensors"
    codec = {"codec.table": torch.arange(6, dtype=torch.int32)}
    model_id = save_model_bundle(path, g, e, licence="test", extra_config={"codec": {"version": 1}}, extra_tensors=codec)
    assert model_id == load_bundle(path).model_id
    loaded = load_checkpoint(path)
    assert loaded.model_id == model_id and loaded.config["codec"] == {"version": 1}
    assert loaded.config["encoder"]["input_size"] == 64 and loaded.config["generator"]["rows"] == 10
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.encoder(x), e(x))
        w = e(x)
        assert torch.equal(loaded.generator(w), g(w))
    # Re-saving what was loaded keeps the parts we do not own, so the id is unchanged.
    assert loaded.save(tmp_path / "again.safetensors") == model_id


def test_bundle_with_wrong_generator_tensor_names_the_key(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=64))
    tensors = {f"generator.{k}": v for k, v in g.state_dict().items()}
    tensors["generator.to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)
    del tensors["generator.noises.noise_3"]
    path = tmp_path / "bad.safetensors"
    Bundle(tensors, {"generator": g.config.to_dict()}).save(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and "noises.noise_3" in msg and "to_rgb1.bias [1, 4, 1, 1]" in msg


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    need_reference()
    sd = g64_state()
    del sd["convs.3.noise.weight"]
    sd["convs.99.weight"] = torch.zeros(1)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CheckpointError, match=r"1 missing: convs\.3\.noise\.weight; 1 unexpected: convs\.99\.weight"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_one_line_error(rosinality_pt: Path, tmp_path: Path) -> None:
    data = rosinality_pt.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(cut)
    assert "\n" not in str(err.value)


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    for name, writer in (("evil.pt", lambda p: torch.save({"g_ema": Payload()}, p)),
                         ("evil.pkl", lambda p: p.write_bytes(pickle.dumps({"G_ema": Payload()})))):
        path = tmp_path / name
        writer(path)
        with pytest.raises(CheckpointError, match=r"refused: unpickling this file would run code \(it imports posix\.mkdir"):
            load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"definitely not a checkpoint", r"not a model file \(an sganc-stream bundle or a PyTorch checkpoint\): its first "
                                     "bytes are neither a zip archive nor a pickle"),
    (b"PK\x03\x04 truncated zip", "not a readable model file"),
    (b"\x80\x02 truncated pickle", "not a readable model file"),
])
def test_garbage_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_foreign_files_are_rejected(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="without sganc metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"not a StyleGAN2 \(g_ema\) or pSp/e4e"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("opts,message", [
    ({"learn_in_w": True}, "learn_in_w"),
    ({"encoder_type": "BackboneEncoderUsingLastLayerIntoW"}, "unsupported encoder_type"),
    ({"input_nc": 1}, "input_nc=1"),
])
def test_unsupported_psp_options(tmp_path: Path, opts: dict, message: str) -> None:
    path = tmp_path / "psp.pt"
    torch.save({"state_dict": {}, "opts": opts, "latent_avg": torch.zeros(18, 512)}, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_encoder_type_contradicting_the_opts_is_refused(tmp_path: Path) -> None:
    """--encoder-type only fills in files whose opts lack it; checked before any tensor is read."""
    path = tmp_path / "e4e.pt"
    torch.save({"state_dict": {}, "opts": {"encoder_type": "Encoder4Editing"}, "latent_avg": torch.zeros(18, 512)}, path)
    with pytest.raises(CheckpointError, match=r"opts say encoder_type 'Encoder4Editing' \(e4e\), not psp") as err:
        load_checkpoint(path, encoder_type="psp")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="unknown encoder type 'x'"):
        load_checkpoint(path, encoder_type="x")
    # the matching type, or none, gets past the type check to the layout check
    for given in ("e4e", None):
        with pytest.raises(CheckpointError, match="decoder does not match the expected layout"):
            load_checkpoint(path, encoder_type=given)


def test_safe_reader_names_the_expected_kind(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"not a training checkpoint \(no arch; top level: model\)"):
        read_torch_file(tmp_path / "x.pt", keys=("arch",), what="training checkpoint")
    with pytest.raises(CheckpointError, match="no such training checkpoint file"):
        read_torch_file(tmp_path / "y.pt", what="training checkpoint")
    assert read_torch_file(tmp_path / "x.pt", keys=("model",)) == {"model": {}}


def test_encoder_id_follows_the_encoder_only(tmp_path: Path) -> None:
    """Same encoder → same id across .pt-free round trips and float16 storage; another encoder → another id."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=64, channel_multiplier=1)).eval()
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10, base_channels=8, max_channels=16)).eval()
    save_model_bundle(tmp_path / "a.safetensors", g, e)
    a = load_checkpoint(tmp_path / "a.safetensors")
    assert a.encoder_id == load_bundle(tmp_path / "a.safetensors").encoder_id
    g2 = Generator(GeneratorConfig(size=64, channel_multiplier=1)).eval()  # other generator weights: same encoder id
    save_model_bundle(tmp_path / "b.safetensors", g2, e, licence="other")
    assert load_checkpoint(tmp_path / "b.safetensors").encoder_id == a.encoder_id
    save_model_bundle(tmp_path / "h.safetensors", g.half(), e.half(), encoder_weights_id=a.encoder_id)
    half = load_checkpoint(tmp_path / "h.safetensors")
    assert half.encoder_id == a.encoder_id and half.config["encoder"]["weights_id"] == a.encoder_id
    e.latent_avg.add_(1.0)
    save_model_bundle(tmp_path / "c.safetensors", g.float(), e.float())
    assert load_checkpoint(tmp_path / "c.safetensors").encoder_id != a.encoder_id
