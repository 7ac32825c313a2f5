"""A decode-only process imports nothing it does not use (benchmarks/startup_memory.py measures it)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.startup_memory import HEAVY, make_stream, measure_decode


def test_decode_process_imports_no_heavy_module(tmp_path: Path) -> None:
    stream = tmp_path / "small.sgnc"
    make_stream(None, 3, stream)  # the embedded face model
    run = measure_decode(stream, None, tmp_path)
    assert run["heavy_modules"] == [], f"decode imported {run['heavy_modules']} (none of {HEAVY} is needed)"
    assert (tmp_path / "out.mp4").stat().st_size > 0
    # loose bounds: the figures themselves depend on the machine and its load (see the README)
    assert run["peak_rss_mb"] < 2048
    assert 0 < run["first_frame_s"] < 300
