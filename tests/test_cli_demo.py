"""`sganc-stream demo` headless, with the tiny model (the embedded one is tested once it ships)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_data import tiny_bundle
from sganc_stream.cli import main


def test_demo_runs_headless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle()), "--frames", "2", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kbps" in printed and "PSNR" in printed
    assert {p.name for p in out.iterdir()} == {"demo.sgnc", "side_by_side.mp4", "aligned_vs_decoded.mp4",
                                               "contact_sheet.png", "report.json"}


def test_demo_rejects_two_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", str(tiny_bundle()), "--input", "a.mp4", "--webcam", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
