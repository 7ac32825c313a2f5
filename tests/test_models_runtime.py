"""FastRunner: fixed-shape eager path on CPU; fp16 and CUDA-graph paths where a GPU exists."""

from __future__ import annotations

import copy

import pytest
import torch

from sganc_stream.models import Generator, GeneratorConfig
from sganc_stream.models.runtime import FastRunner


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(GeneratorConfig(size=64)).eval()


def test_cpu_float32_runner_matches_module(generator: Generator) -> None:
    w = torch.randn(2, generator.n_latent, 512)
    runner = FastRunner(copy.deepcopy(generator), tuple(w.shape), device="cpu", dtype=torch.float32, cuda_graph=False)
    with torch.inference_mode():
        assert torch.equal(runner(w), generator(w))
    with pytest.raises(ValueError, match="input shape"):
        runner(w[:1])
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        FastRunner(copy.deepcopy(generator), tuple(w.shape), device="cpu", cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 5e-2)])
def test_cuda_graph_matches_eager(generator: Generator, dtype: torch.dtype, tol: float) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    w = torch.randn(2, generator.n_latent, 512)
    with torch.inference_mode():
        ref = generator(w)
    runner = FastRunner(copy.deepcopy(generator), tuple(w.shape), device="cuda", dtype=dtype, cuda_graph=True)
    first = runner(w.cuda()).cpu()
    second = runner(w.cuda() * 1).cpu()
    assert torch.equal(first, second)
    assert (first - ref).abs().max() <= tol * max(1.0, ref.abs().max().item())
