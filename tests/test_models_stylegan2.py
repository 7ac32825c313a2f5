"""StyleGAN2 generator: layouts and outputs of the rosinality reference (../shared/reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sganc_stream.models.recipe import layout_of, load_layout, make_weights, tolerance_excess, weights_sha256
from sganc_stream.models.stylegan2 import Generator, GeneratorConfig

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_seeds(size: int) -> list[int]:
    """Seeds of the generator vector files present (seed 1 ships; other sets can be dropped in beside it)."""
    found = sorted(int(f.stem.rsplit("seed", 1)[1]) for f in (REFERENCE / "vectors").glob(f"generator{size}_cm2_seed*.npz"))
    return found or [1]


def reference_generator(size: int, cm: int = 2, seed: int = 1) -> Generator:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    entries = load_layout(REFERENCE / "layouts" / f"stylegan2_generator_{size}_cm{cm}.json")
    weights = make_weights(entries, seed)
    manifest = json.loads((REFERENCE / "vectors" / "manifest_generators.json").read_text())
    name = f"generator{size}_cm{cm}_seed{seed}.npz"
    if name in manifest:
        assert weights_sha256(weights.values()) == manifest[name]["weights_sha256"]
    g = Generator(GeneratorConfig(size=size, channel_multiplier=cm)).eval()
    g.load_state_dict(weights, strict=True)
    return g


@pytest.mark.parametrize("size,cm", [(64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (1024, 2)])
def test_state_dict_layout_equals_reference(size: int, cm: int) -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    with torch.device("meta"):
        g = Generator(GeneratorConfig(size=size, channel_multiplier=cm))
    expected = load_layout(REFERENCE / "layouts" / f"stylegan2_generator_{size}_cm{cm}.json")
    assert layout_of(g.state_dict()) == expected  # names, order, shapes and dtypes


@pytest.mark.parametrize("size,seed", [(size, seed) for size in (64, 256) for seed in reference_seeds(size)])
def test_reproduces_reference_images_and_mapping(size: int, seed: int) -> None:
    g = reference_generator(size, seed=seed)
    ref = np.load(REFERENCE / "vectors" / f"generator{size}_cm2_seed{seed}.npz")
    with torch.inference_mode():
        image = g(torch.from_numpy(ref["wplus"])).numpy()
        w = g.mapping(torch.from_numpy(ref["z"]))
        image_w = g(w).numpy()
    assert tolerance_excess(image, ref["image"]) <= 0
    assert tolerance_excess(w.numpy(), ref["w"]) <= 0
    assert tolerance_excess(image_w, ref["image_w"]) <= 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", reference_seeds(1024))
def test_reproduces_reference_1024(seed: int) -> None:
    g = reference_generator(1024, seed=seed)
    ref = np.load(REFERENCE / "vectors" / f"generator1024_cm2_seed{seed}.npz")
    crop = (slice(None), slice(None), slice(448, 576), slice(448, 576))
    with torch.inference_mode():
        image = g(torch.from_numpy(ref["wplus"])).numpy()
        w = g.mapping(torch.from_numpy(ref["z"]))
        image_w = g(w).numpy()
    assert tolerance_excess(image, ref["image"].astype(np.float32), rtol=1e-3) <= 0
    assert tolerance_excess(image[crop], ref["image_crop_f32"]) <= 0
    assert tolerance_excess(image.mean(axis=(2, 3)), ref["image_mean_f32"]) <= 0
    assert tolerance_excess(w.numpy(), ref["w"]) <= 0
    assert tolerance_excess(image_w[crop], ref["image_w_crop_f32"]) <= 0


def test_same_seed_gives_same_image_twice() -> None:
    torch.manual_seed(3)
    g = Generator(GeneratorConfig(size=64)).eval()
    w = torch.randn(2, g.n_latent, 512)
    with torch.inference_mode():
        a, b = g(w), g(w)
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 64, 64) and torch.isfinite(a).all()


def test_noise_comes_from_buffers() -> None:
    torch.manual_seed(4)
    g = Generator(GeneratorConfig(size=64)).eval()
    for conv in [g.conv1, *g.convs]:
        conv.noise.weight.data.fill_(1.0)
    w = torch.randn(1, g.n_latent, 512)
    with torch.inference_mode():
        before = g(w)
        g.noises.noise_8.mul_(-1)
        after = g(w)
    assert not torch.allclose(before, after)


def test_single_w_broadcasts_to_all_rows() -> None:
    torch.manual_seed(5)
    g = Generator(GeneratorConfig(size=64)).eval()
    w = torch.randn(2, 512)
    with torch.inference_mode():
        assert torch.equal(g(w), g(w[:, None].expand(-1, g.n_latent, -1).contiguous()))


@pytest.mark.parametrize("size", [32, 96, 2048])
def test_rejects_unsupported_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(size=size)
