"""Camera sources and the frame sink: clip as a paced fake camera, overlay, headless recording."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from rtc_data import CLIP_FPS, clip
from sganc_stream.errors import InputError
from sganc_stream.rtc.media import FrameSink, open_source, overlay
from sganc_stream.video import VideoReader


def test_clip_is_a_looped_real_time_camera() -> None:
    source = open_source(clip(), None)
    assert source.fps == CLIP_FPS

    async def take(n: int) -> list[float]:
        times = []
        async for frame, t in source:  # type: ignore[union-attr]
            assert frame.shape == (64, 64, 3)
            times.append(t)
            if len(times) == n:
                return times
        return times

    start = time.time()
    times = asyncio.run(asyncio.wait_for(take(25), timeout=20))  # the clip has 20 frames: it loops
    source.close()
    assert len(times) == 25 and abs(times[0] - start) < 1.0
    assert np.allclose(np.diff(times), 1 / CLIP_FPS, atol=1e-6)


def test_no_source_is_an_error() -> None:
    with pytest.raises(InputError, match="--camera DEVICE or --video FILE"):
        open_source(None, None)
    with pytest.raises(InputError, match="cannot open camera"):
        open_source(None, "/nonexistent/video9")


def test_overlay_scales_and_draws() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    out = overlay(frame, ["12.0 kbps", "10 fps"], side=256)
    assert out.shape == (256, 256, 3) and out.max() > 0


def test_headless_sink_records_decodable_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(InputError, match="--headless"):
        FrameSink(record=None, fps=10, headless=False)
    sink = FrameSink(record=tmp_path / "out.mp4", fps=10, headless=True)
    captured_ms = [5000, 5100, 5200, 5500, 5600]  # frames 4–5 were dropped in the call: the recording keeps the gap
    for i, ms in enumerate(captured_ms):
        sink.show(np.full((64, 64, 3), 40 * i, np.uint8), ["x"], ms)
    sink.close()
    with VideoReader(tmp_path / "out.mp4") as video:
        assert [round(t * 1000) for _, t in video.timed()] == [0, 100, 200, 500, 600]
    empty = FrameSink(record=tmp_path / "empty.mp4", fps=10, headless=True)
    empty.close()
    assert not (tmp_path / "empty.mp4").exists()
