"""`sganc-stream weights` sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from sganc_stream.cli import weights as cli
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.models import Generator, GeneratorConfig, load_checkpoint


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sganc-stream")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_shows_sources_and_hash_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["weights", "--dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "psp_ffhq_encode.pt  [absent]" in out and "1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0" in out
    assert out.count("not published; recorded at first download") == 3


def test_verify_missing_file_and_fetch_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="no such file"):
        run(["weights", "--dir", str(tmp_path), "verify", "stylegan2-ffhq"])
    monkeypatch.setattr(cli.W.urllib.request, "urlopen", lambda req, timeout: (_ for _ in ()).throw(TimeoutError("timed out")))
    with pytest.raises(CheckpointError, match="no network"):
        run(["weights", "--dir", str(tmp_path), "fetch", "stylegan2-ffhq"])


def test_bundle_converts_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=64, channel_multiplier=1))
    torch.save({"g_ema": g.state_dict()}, tmp_path / "g.pt")
    assert run(["weights", "bundle", str(tmp_path / "g.pt"), str(tmp_path / "g.safetensors")]) == 0
    model = load_checkpoint(tmp_path / "g.safetensors")
    out = capsys.readouterr().out
    assert f"model id {model.model_id}" in out and "generator only: cannot encode faces" in out
    assert model.generator.config.channel_multiplier == 1
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in model.generator.state_dict().items())
