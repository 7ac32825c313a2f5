"""The default flow runner (numpy, stage groups batched) against the PyTorch reference flow (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sganc_stream.latent.flow import FlowStack, RealNVP
from sganc_stream.latent.model import DECODED_ATOL, DECODED_RTOL
from sganc_stream.latent.numpy_flow import NumpyFlows


def _flows(width: int, groups: list[tuple[int, int]], couplings: int = 5, hidden: int = 24) -> list[RealNVP]:
    torch.manual_seed(1)
    flows = [RealNVP(width, hidden=hidden, couplings=couplings) for _ in groups]
    for flow in flows:
        for p in flow.parameters():
            torch.nn.init.normal_(p, std=0.15)
    return flows


def _runner(flows: list[RealNVP], groups: list[tuple[int, int]], width: int) -> NumpyFlows:
    return NumpyFlows([{k: v.detach().numpy() for k, v in f.state_dict().items()} for f in flows], groups, width)


@pytest.mark.parametrize("width, groups", [(64, [(0, 3), (3, 5), (5, 6)]), (33, [(0, 4)]), (18, [(0, 1), (1, 7)])])
def test_agrees_with_the_torch_flow_within_the_decoder_tolerance(width: int, groups: list[tuple[int, int]]) -> None:
    """Uneven groups (padded rows), odd widths (halves of different sizes), one group: T and T⁻¹ as the reference."""
    flows, rows = _flows(width, groups), groups[-1][1]
    runner = _runner(flows, groups, width)
    x = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)
    with torch.no_grad():
        ref_y = FlowStack(flows, groups, inverse=False)(torch.from_numpy(x)).numpy()
        state = np.rint(ref_y * 4).astype(np.float32) / 4
        ref_x = FlowStack(flows, groups, inverse=True)(torch.from_numpy(state)).numpy()
    y, back = runner.forward(x), runner.inverse(state)
    assert y.dtype == back.dtype == np.float32 and y.shape == back.shape == (rows, width)
    assert np.abs(ref_y - x).mean() > 0.05  # the flows really transform
    np.testing.assert_allclose(y, ref_y, rtol=DECODED_RTOL, atol=DECODED_ATOL)
    np.testing.assert_allclose(back, ref_x, rtol=DECODED_RTOL, atol=DECODED_ATOL)
    np.testing.assert_allclose(runner.inverse(y), x, rtol=1e-4, atol=1e-4)  # a bijection


def test_no_couplings_is_the_identity_and_mismatched_flows_are_refused() -> None:
    groups = [(0, 2), (2, 3)]
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    runner = _runner(_flows(8, groups, couplings=0), groups, 8)
    assert np.array_equal(runner.forward(x), x) and np.array_equal(runner.inverse(x), x)
    mixed = _flows(8, groups[:1], couplings=2) + _flows(8, groups[1:], couplings=3)
    with pytest.raises(ValueError, match="different numbers of couplings"):
        _runner(mixed, groups, 8)


def test_codec_default_runner_is_numpy_and_matches_torch(tiny_codec) -> None:
    """The codec runs T and T⁻¹ in numpy by default; its outputs stay within SPEC §7 of the PyTorch reference."""
    from sganc_stream.latent.flow import TorchFlows

    w = np.random.default_rng(2).normal(size=(tiny_codec.rows, tiny_codec.width)).astype(np.float32)
    state = np.rint(tiny_codec.to_proxy(w) / tiny_codec.steps[1]).astype(np.int64)
    assert isinstance(tiny_codec._runner(), NumpyFlows)
    reference = TorchFlows(tiny_codec.flows, tiny_codec.groups)
    y = (state.astype(np.float32) * np.float32(tiny_codec.steps[1])).reshape(tiny_codec.rows, tiny_codec.width)
    np.testing.assert_allclose(tiny_codec.from_state(state, 1), reference.inverse(y), rtol=DECODED_RTOL, atol=DECODED_ATOL)
