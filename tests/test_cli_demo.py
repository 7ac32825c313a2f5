"""`sganc-stream demo` headless, with the tiny model (the embedded one is tested once it ships)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline_data import tiny_bundle
from sganc_stream.cli import main
from sganc_stream.refine import RefineOptions


def test_demo_runs_headless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle()), "--max-frames", "2", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kbps" in printed and "PSNR" in printed
    assert {p.name for p in out.iterdir()} == {"demo.sgnc", "side_by_side.mp4", "aligned_vs_decoded.mp4",
                                               "contact_sheet.png", "report.json"}
    report = json.loads((out / "report.json").read_text())
    videos = {k: Path(v).name for k, v in report["outputs"].items() if k not in ("sgnc", "report", "lossless")}
    assert videos == {"side_by_side": "side_by_side.mp4", "aligned_vs_decoded": "aligned_vs_decoded.mp4",
                      "contact_sheet": "contact_sheet.png"}  # every file it writes is named
    assert "aligned_vs_decoded.mp4" in printed and "contact_sheet.png" in printed
    # the step and the encoder choices a user did not make are named (auto: the tiny model's temporal context)
    assert (f"step Δ = {report['stream']['step']:g} (temporal context, drift damping 0, rounding offset 0.5),"
            in printed)
    assert report["stream"]["refine"] is None and "refined" not in printed


def test_refine_is_in_the_report_and_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle()), "--max-frames", "1", "--refine", "2", "--quiet", "--out",
                 str(out)]) == 0
    assert "quality mode: W+ refined by 2 steps a frame (--refine)" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["stream"]["refine"] == asdict(RefineOptions(2))


def test_a_refused_input_leaves_no_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    kept = tmp_path / "kept"
    kept.mkdir()
    for out in (tmp_path / "dd" / "inner", kept):
        assert main(["demo", "--model", str(tiny_bundle()), "--input", str(fake), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sganc-stream demo: error: cannot read video")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mp4", "kept"]  # made and removed; kept as it was
    assert list(kept.iterdir()) == []


def test_demo_rejects_two_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", str(tiny_bundle()), "--input", "a.mp4", "--webcam", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
