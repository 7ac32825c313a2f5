"""Our fast encoder: configurable shapes, latent_avg start, input resizing."""

from __future__ import annotations

import pytest
import torch

from sganc_stream.models.fast_encoder import DESCRIPTOR_DIM, FastEncoder, FastEncoderConfig, face_descriptors


@pytest.mark.parametrize("input_size,n_latent,groups", [(128, 18, [3, 4, 11]), (64, 10, [3, 4, 3]), (256, 14, [3, 4, 7]),
                                                         (32, 2, [2])])
def test_output_shape_and_row_groups(input_size: int, n_latent: int, groups: list[int]) -> None:
    e = FastEncoder(FastEncoderConfig(input_size=input_size, n_latent=n_latent)).eval()
    assert e.group_rows == groups
    with torch.inference_mode():
        out = e(torch.rand(3, 3, input_size, input_size) * 2 - 1)
    assert out.shape == (3, n_latent, 512) and torch.isfinite(out).all()


def test_zero_heads_give_latent_avg() -> None:
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10)).eval()
    for head in e.heads:
        torch.nn.init.zeros_(head.linear.weight)
        torch.nn.init.zeros_(head.linear.bias)
    e.latent_avg.normal_()
    with torch.inference_mode():
        out = e(torch.rand(2, 3, 64, 64))
    assert torch.equal(out, e.latent_avg.expand(2, -1, -1))


def test_input_is_resized_to_the_configured_size() -> None:
    torch.manual_seed(0)
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10)).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    small = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        assert torch.equal(e(x), e(small))
        assert not torch.allclose(e(x), e(-x))  # the output depends on the image


def test_config_round_trip_and_validation() -> None:
    cfg = FastEncoderConfig(input_size=128, n_latent=14, base_channels=16)
    assert FastEncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="power of two"):
        FastEncoderConfig(input_size=100)


def test_identity_conditioned_encoder_starts_as_the_plain_one_and_reads_the_descriptor() -> None:
    torch.manual_seed(0)
    plain = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10, base_channels=8, max_channels=16)).eval()
    conditioned = FastEncoder(FastEncoderConfig(input_size=64, n_latent=10, base_channels=8, max_channels=16,
                                                identity_dim=DESCRIPTOR_DIM)).eval()
    conditioned.load_state_dict({**plain.state_dict(), **{k: v for k, v in conditioned.state_dict().items()
                                                          if k.startswith("identity_head.")}})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    descriptor = torch.randn(2, DESCRIPTOR_DIM) * 0.1
    with torch.inference_mode():
        assert torch.equal(conditioned.codes(x, identity=descriptor), plain.codes(x))  # the head starts at zero
        torch.nn.init.normal_(conditioned.identity_head.weight)
        moved = conditioned.codes(x, identity=descriptor) - plain.codes(x)
        expected = conditioned.identity_head(descriptor).view(2, 10, 512)
        torch.testing.assert_close(moved, expected, rtol=1e-5, atol=1e-5)


def test_identity_conditioned_encoder_computes_the_descriptor_when_not_given() -> None:
    torch.manual_seed(1)
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=4, base_channels=8, max_channels=16,
                                      identity_dim=DESCRIPTOR_DIM)).eval()
    torch.nn.init.normal_(e.identity_head.weight, std=0.1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        descriptor = face_descriptors(x)
        assert descriptor.shape == (2, DESCRIPTOR_DIM) and descriptor.dtype == torch.float32
        torch.testing.assert_close(e.codes(x), e.codes(x, identity=descriptor), rtol=0, atol=0)
        assert not torch.allclose(e.codes(x, identity=descriptor), e.codes(x, identity=torch.zeros_like(descriptor)))


def test_identity_dim_is_dlibs_descriptor_or_nothing() -> None:
    with pytest.raises(ValueError, match="identity_dim must be 0 or 128"):
        FastEncoderConfig(input_size=64, identity_dim=64)
    cfg = FastEncoderConfig(input_size=64, identity_dim=DESCRIPTOR_DIM)
    assert FastEncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert FastEncoderConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "identity_dim"}).identity_dim == 0
    # without it, the config (and so every model id) is what it was before the field existed
    assert "identity_dim" not in FastEncoderConfig(input_size=64).to_dict()


def test_identity_conditioned_encoder_exports_to_onnx_without_a_forward_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Field fault: `decode --runtime onnx` on the v1 bundle in a fresh process failed (ONNX cannot export the dlib
    network's weight initialisation, which the first forward did inside the trace). The encoder builds that network
    when it is made, so the graph exports with no forward before it, and ONNX Runtime agrees with PyTorch."""
    import onnxruntime as ort

    from sganc_stream.models import fast_encoder
    from sganc_stream.models.onnx_export import Project, to_onnx
    from sganc_stream.onnx_runtime import session_options

    monkeypatch.setattr(fast_encoder, "_descriptor_nets", {})  # as in a process that never ran the encoder
    e = FastEncoder(FastEncoderConfig(input_size=64, n_latent=4, identity_dim=DESCRIPTOR_DIM)).eval()
    torch.nn.init.normal_(e.identity_head.weight, std=0.1)
    project = Project(e, 64)
    crops = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    session = ort.InferenceSession(to_onnx(project, crops, "x", "y"), session_options(),
                                   providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = project(crops).numpy()
    got = session.run(None, {"x": crops.numpy()})[0]
    assert got.shape == expected.shape == (1, 4, 512)
    assert (abs(got - expected) / (1 + abs(expected))).max() <= 1e-4
