"""pSp and e4e encoders against the reference codes and pooled decodes (../shared/reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sganc_stream.models.encoders import Encoder4Editing, GradualStyleEncoder, images_to_tensor
from sganc_stream.models.recipe import layout_of, load_layout, psp_checkpoint, tolerance_excess, weights_sha256
from sganc_stream.models.stylegan2 import Generator

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
# Seeds of the pSp vector files present (seed 1 ships; other sets can be dropped in beside it).
SEEDS = sorted(int(f.stem.rsplit("seed", 1)[1]) for f in (REFERENCE / "vectors").glob("psp_ffhq_encode_seed*.npz")) or [1]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda seed: f"seed{seed}")
def reference_outputs(request: pytest.FixtureRequest) -> dict:
    """Our pSp and e4e outputs for one seed's recipe weights (computed once per seed: ~300 M parameters)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    seed = request.param
    ckpt = psp_checkpoint(REFERENCE / "layouts", seed=seed)
    manifest = json.loads((REFERENCE / "vectors" / "manifest_psp_ffhq_encode.json").read_text())
    entry = manifest.get(f"psp_ffhq_encode_seed{seed}.npz")
    if entry is not None:
        digest = weights_sha256([*ckpt["state_dict"].values(), ckpt["latent_avg"]])
        assert digest == entry["weights_sha256_state_dict_plus_latent_avg"]
    sd = ckpt.pop("state_dict")
    encoder_sd = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    encoder_sd["latent_avg"] = ckpt["latent_avg"]
    with torch.device("meta"):  # no random init of ~300 M parameters; the recipe tensors are adopted
        g = Generator().eval()
    g.load_state_dict({k.removeprefix("decoder."): v for k, v in sd.items() if k.startswith("decoder.")}, strict=True, assign=True)
    del sd
    x = torch.from_numpy(np.load(REFERENCE / "vectors" / f"psp_ffhq_encode_seed{seed}.npz")["x"])
    out = {"seed": seed}
    for name, cls in (("psp", GradualStyleEncoder), ("e4e", Encoder4Editing)):
        with torch.device("meta"):
            e = cls().eval()
        e.load_state_dict(encoder_sd, strict=True, assign=True)
        with torch.inference_mode():
            codes = e.codes(x)
            image = F.adaptive_avg_pool2d(g(e(x)), (256, 256))
        out[f"{name}_codes"], out[f"{name}_image"] = codes.numpy(), image.numpy()
    return out


def test_encoder_layout_equals_reference() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    expected = [e for e in load_layout(REFERENCE / "layouts" / "psp_ffhq_encode.state_dict.json") if e[0].startswith("encoder.")]
    for cls in (GradualStyleEncoder, Encoder4Editing):
        with torch.device("meta"):
            sd = cls().state_dict()
        ours = [(f"encoder.{k}", s, d) for k, s, d in layout_of(sd) if k != "latent_avg"]
        assert ours == expected
        assert tuple(sd["latent_avg"].shape) == (18, 512)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["psp", "e4e"])
def test_reproduces_reference(reference_outputs: dict, name: str) -> None:
    ref = np.load(REFERENCE / "vectors" / f"{name}_ffhq_encode_seed{reference_outputs['seed']}.npz")
    assert tolerance_excess(reference_outputs[f"{name}_codes"], ref["codes"]) <= 0
    assert tolerance_excess(reference_outputs[f"{name}_image"], ref[f"{name}_image"]) <= 0


@pytest.mark.slow
def test_e4e_is_base_code_plus_psp_offsets(reference_outputs: dict) -> None:
    """Same weights: e4e row 0 is pSp row 0, and e4e row i is row 0 plus pSp's head i (README §6)."""
    psp, e4e = reference_outputs["psp_codes"], reference_outputs["e4e_codes"]
    np.testing.assert_allclose(e4e[:, 0], psp[:, 0], atol=1e-6)
    np.testing.assert_allclose(e4e[:, 1:], psp[:, :1] + psp[:, 1:], atol=1e-5)


def test_non_256_input_is_resized() -> None:
    torch.manual_seed(0)
    e = GradualStyleEncoder().eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        small = e(x)
        big = e(F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True))
    assert small.shape == (1, 18, 512)
    assert torch.allclose(small, big, atol=1e-5)


def test_images_to_tensor_matches_totensor_normalize() -> None:
    img = np.arange(2 * 4 * 5 * 3, dtype=np.int64).reshape(2, 4, 5, 3).astype(np.uint8) * 2
    x = images_to_tensor(img)
    assert x.shape == (2, 3, 4, 5)
    expected = (torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(x, expected, atol=1e-6)
    assert images_to_tensor(img[0]).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match="uint8 RGB"):
        images_to_tensor(img.astype(np.float32))
