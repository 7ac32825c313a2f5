"""The numpy weights recipe matches the reference manifests and rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.models.recipe import FIR_UP, load_layout, make_weights, recipe_value, tolerance_excess, weights_sha256

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def test_g64_weights_hash_matches_manifest() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    weights = make_weights(load_layout(REFERENCE / "layouts" / "stylegan2_generator_64_cm2.json"), seed=1)
    assert weights_sha256(weights.values()) == "048c3861d0ae6536eec9191bfc7ed2eac51e44e38e4275e215681a0ecdc5dbef"
    manifest = json.loads((REFERENCE / "vectors" / "manifest_generators.json").read_text())
    assert weights_sha256(weights.values()) == manifest["generator64_cm2_seed1.npz"]["weights_sha256"]
    assert weights_sha256(make_weights(load_layout(REFERENCE / "layouts" / "stylegan2_generator_64_cm2.json"), 2).values()) != \
        manifest["generator64_cm2_seed1.npz"]["weights_sha256"]


def test_rules() -> None:
    draw = np.random.default_rng([7, 3]).standard_normal((8, 4, 3, 3)).astype(np.float32)
    assert recipe_value(7, 3, "a.num_batches_tracked", []).dtype == np.int64
    assert np.array_equal(recipe_value(7, 3, "convs.0.conv.blur.kernel", [4, 4]), FIR_UP)
    assert FIR_UP.sum() == pytest.approx(4.0)
    assert np.array_equal(recipe_value(7, 3, "decoder.style.2.weight", [8, 4, 3, 3]), draw * np.float32(100))
    assert np.array_equal(recipe_value(7, 3, "x.running_var", [8, 4, 3, 3]), np.abs(draw) + np.float32(0.5))
    assert np.array_equal(recipe_value(7, 3, "conv.weight", [8, 4, 3, 3]), draw * np.float32(np.sqrt(2 / 36)))
    assert np.array_equal(recipe_value(7, 3, "to_rgb1.conv.weight", [8, 4, 3, 3]), draw * np.float32(np.sqrt(2 / 36)))
    assert np.array_equal(recipe_value(7, 3, "style_mod.weight", [8, 4, 3, 3]), draw * np.float32(np.sqrt(2 / 36)))


def test_tolerance_excess() -> None:
    ref = np.array([0.0, 10.0])
    assert tolerance_excess(ref + [5e-5, 5e-4], ref) <= 0
    assert tolerance_excess(ref + [2e-4, 0.0], ref) > 0
