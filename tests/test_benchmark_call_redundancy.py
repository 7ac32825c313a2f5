"""The redundancy benchmark's simulation (benchmarks/call_redundancy.py) on the tiny codec: exact decoding of every
shown frame through loss, recovery from redundancy instead of keyframes, and the bytes it costs."""

from __future__ import annotations

import sys
from pathlib import Path

from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.synthetic import synthetic_latents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from call_redundancy import simulate  # noqa: E402
from conftest import TINY_ROWS, TINY_WIDTH  # noqa: E402


def test_redundancy_shows_more_frames_with_fewer_keyframes(tiny_codec: LatentCodecModel) -> None:
    latents = synthetic_latents("walk", 120, TINY_ROWS, TINY_WIDTH, seed=5)
    params = StreamParams("open", 4, 1)
    run = {depth: simulate(tiny_codec, latents, params, 25.0, depth=depth, fit=True, loss=0.2, burst=None, seed=1,
                           rtt_ms=100.0) for depth in (0, 1)}  # simulate asserts every shown frame is bit-exact
    assert run[0].restored == 0 and run[1].restored > 0
    assert run[1].shown > run[0].shown and run[1].keyframes < run[0].keyframes
    assert run[1].message_bytes > run[0].message_bytes
    clean = simulate(tiny_codec, latents, params, 25.0, depth=1, fit=True, loss=0.0, burst=None, seed=1, rtt_ms=100.0)
    assert clean.shown == clean.sent == 120 and clean.keyframes == 0 and clean.gaps == 0
