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
