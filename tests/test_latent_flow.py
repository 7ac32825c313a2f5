import torch

from sganc_stream.latent.flow import NUM_COUPLINGS, RealNVP


def _randomized(width: int) -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(width, hidden=32)
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return flow


def test_paper_architecture():
    flow = RealNVP(512)
    assert len(flow.layers) == NUM_COUPLINGS == 13
    layer = flow.layers[0]
    linears = lambda net: [m for m in net if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert len(linears(layer.scale)) == 3 and len(linears(layer.shift)) == 3
    assert isinstance(layer.scale[-1], torch.nn.Tanh)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in flow.modules())


def test_untrained_flow_is_identity():
    x = torch.randn(3, 18, 512)
    assert torch.equal(RealNVP(512)(x), x)


def test_inverse_recovers_input_for_any_width():
    for width in (512, 33):
        flow = _randomized(width)
        x = torch.randn(5, 7, width)
        y = flow(x)
        assert (y - x).abs().mean() > 0.05  # the flow really transforms
        assert torch.allclose(flow.inverse(y), x, atol=1e-5)
        assert torch.allclose(flow(flow.inverse(x)), x, atol=1e-5)


def test_composition_equals_the_couplings_one_by_one():
    """RealNVP keeps the even/odd halves apart between layers: the same arithmetic as AffineCoupling in turn, bit for
    bit on a (rows, width) frame (what the latent codec runs), to float rounding on batched frames (BLAS blocking)."""
    for width in (512, 33):
        flow = _randomized(width)
        for shape, exact in (((3, width), True), ((10, width), True), ((4, 5, width), False)):
            x = torch.randn(*shape)
            y = x
            for layer in flow.layers:
                y = layer(y)
            z = y
            for layer in reversed(flow.layers):
                z = layer.inverse(z)
            if exact:
                assert torch.equal(flow(x), y) and torch.equal(flow.inverse(y), z)
            else:
                assert torch.allclose(flow(x), y, rtol=1e-5, atol=1e-5)
                assert torch.allclose(flow.inverse(y), z, rtol=1e-5, atol=1e-5)
