"""``--residual-table auto`` (the default): the model's empirical residual table where it has one for the stream's
period g in open mode, else Irwin–Hall; resolved once, in ``stream_params_from``, so StreamParams and the stream
header only ever name a concrete table."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.bitstream.container import decode_container
from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.cli import main
from sganc_stream.cli.options import (add_rate_argument, add_residual_argument, add_stream_arguments,
                                      check_stream_arguments, stream_params_from)
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams, resolve_residual
from sganc_stream.latent.model import LatentCodecModel, load_latent_codec
from sganc_stream.latent.synthetic import synthetic_latents

from conftest import TINY_ROWS, TINY_WIDTH


def _bundle_with_periods(source: Path, target: Path, periods: list[int]) -> Path:
    """The tiny codec with only the empirical residual tables of ``periods`` (as the shipped bundle: g = 10 only)."""
    b = load_bundle(source)
    keep = {k: v for k, v in b.tensors.items()
            if ".residual." not in k or any(f".residual.{g}." in k for g in periods)}
    codec = {k: v for k, v in b.config["codec"].items() if k != "empirical_residual_g"}
    if periods:
        codec["empirical_residual_g"] = sorted(periods)
    Bundle(keep, {**b.config, "codec": codec}).save(target)
    return target


@pytest.fixture(scope="module")
def g10_path(tiny_codec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle_with_periods(tiny_codec_path, tmp_path_factory.mktemp("g10") / "g10.safetensors", [10])


@pytest.fixture(scope="module")
def g10(g10_path: Path) -> LatentCodecModel:
    codec = load_latent_codec(g10_path)
    assert sorted(codec.empirical_residuals) == [10]
    return codec


@pytest.fixture(scope="module")
def plain(tiny_codec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> LatentCodecModel:
    codec = load_latent_codec(_bundle_with_periods(tiny_codec_path, tmp_path_factory.mktemp("plain") / "plain.safetensors", []))
    assert codec.empirical_residuals == {}
    return codec


def _args(*argv: str, adders: tuple[Callable[[argparse.ArgumentParser], None], ...] = (add_rate_argument,)
          ) -> argparse.Namespace:
    """``argv`` parsed by a command's coding options: stream and residual options, then ``adders``' (--target-kbps)."""
    p = argparse.ArgumentParser()
    add_stream_arguments(p)
    add_residual_argument(p)
    for add in adders:
        add(p)
    return p.parse_args(list(argv))


def test_auto_is_the_default_and_is_accepted_in_every_mode_before_a_model_is_loaded() -> None:
    assert _args().residual_table == "auto"
    for mode in ("open", "closed", "intra"):
        for g in ("0", "5", "10"):
            check_stream_arguments(_args("--mode", mode, "--g", g))  # no error: the model decides later
    with pytest.raises(InputError, match="^an empirical residual table needs residuals: open mode with g > 0$"):
        check_stream_arguments(_args("--mode", "closed", "--residual-table", "empirical"))
    with pytest.raises(InputError, match="an empirical residual table needs residuals"):
        check_stream_arguments(_args("--g", "0", "--residual-table", "empirical"))


@pytest.mark.parametrize("argv, residual, version", [
    ((), "empirical", 3),  # open, g = 10: the model has the table
    (("--g", "5"), "irwin_hall", 2),  # a period without a table
    (("--g", "0"), "irwin_hall", 2),  # no residuals
    (("--mode", "closed"), "irwin_hall", 2),
    (("--mode", "intra"), "irwin_hall", 2),
    (("--residual-table", "irwin_hall"), "irwin_hall", 2),  # an explicit choice is kept
    (("--residual-table", "empirical"), "empirical", 3),
    (("--target-kbps", "20"), "empirical", 4),  # rate control: the table at every step of the set
    (("--g", "5", "--target-kbps", "20"), "irwin_hall", 4),
])
def test_auto_resolves_against_the_model(g10: LatentCodecModel, argv: tuple[str, ...], residual: str,
                                         version: int) -> None:
    params = stream_params_from(_args(*argv), g10)
    assert params.residual == residual and params.version() == version
    header = params.header(g10, 25.0, 0)
    assert (header.residual, header.version) == (residual, version)
    if residual == "empirical":
        assert params.residual_table(g10) is g10.empirical_residuals[10][params.step_index]


def test_auto_without_empirical_tables_is_irwin_hall_and_explicit_empirical_names_the_periods(
        g10: LatentCodecModel, plain: LatentCodecModel) -> None:
    assert stream_params_from(_args(), plain).residual == "irwin_hall"
    with pytest.raises(InputError, match=r"no empirical residual table for g = 5 \(periods it has: 10\)"):
        stream_params_from(_args("--g", "5", "--residual-table", "empirical"), g10)
    with pytest.raises(InputError, match=r"no empirical residual table for g = 10 \(periods it has: none\)"):
        stream_params_from(_args("--residual-table", "empirical"), plain)


def test_stream_params_hold_only_concrete_tables(g10: LatentCodecModel) -> None:
    with pytest.raises(InputError, match="residual table must be one of irwin_hall, empirical, got 'auto'"):
        StreamParams(residual="auto")
    assert resolve_residual("auto", "open", 10, g10) == "empirical"
    assert resolve_residual("auto", "open", 10, None) == "irwin_hall"  # before the model is loaded
    assert resolve_residual("empirical", "closed", 0, g10) == "empirical"  # passed on, for StreamParams to refuse


def test_latents_encode_default_is_exact_and_equals_the_explicit_table(g10_path: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``latents encode`` without --residual-table: at g = 10 a v3 stream, byte for byte the explicit
    ``--residual-table empirical`` one, that decodes exactly to the encoder's reconstruction; at g = 5 the explicit
    Irwin–Hall one (v2); closed mode v2."""
    np.save(tmp_path / "in.npy", synthetic_latents("walk", 25, TINY_ROWS, TINY_WIDTH, seed=31))
    model = ["--model", str(g10_path)]

    def encode(name: str, *extra: str) -> bytes:
        assert main(["latents", "encode", *model, *extra, "--recon", str(tmp_path / f"{name}.recon.npy"),
                     str(tmp_path / "in.npy"), str(tmp_path / f"{name}.sgnc")]) == 0
        return (tmp_path / f"{name}.sgnc").read_bytes()

    auto = encode("auto")
    header = decode_container(auto).header
    assert (header.version, header.residual, header.g, header.mode) == (3, "empirical", 10, "open")
    assert auto == encode("emp", "--residual-table", "empirical")
    assert auto != encode("ih", "--residual-table", "irwin_hall")  # the residual frames (10, 20) differ
    assert main(["latents", "decode", *model, str(tmp_path / "auto.sgnc"), str(tmp_path / "auto.out.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "auto.out.npy"), np.load(tmp_path / "auto.recon.npy"))

    g5 = encode("g5", "--g", "5")
    assert (decode_container(g5).header.version, decode_container(g5).header.residual) == (2, "irwin_hall")
    assert g5 == encode("g5ih", "--g", "5", "--residual-table", "irwin_hall")
    closed = decode_container(encode("closed", "--mode", "closed")).header
    assert (closed.version, closed.residual) == (2, "irwin_hall")

    capsys.readouterr()
    assert main(["latents", "encode", *model, "--g", "5", "--residual-table", "empirical", str(tmp_path / "in.npy"),
                 str(tmp_path / "bad.sgnc")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no empirical residual table for g = 5 (periods it has: 10)" in err
    assert not (tmp_path / "bad.sgnc").exists()
    assert main(["latents", "encode", *model, "--mode", "closed", "--residual-table", "empirical",
                 str(tmp_path / "in.npy"), str(tmp_path / "bad.sgnc")]) == 2
    assert "empirical residual table needs residuals" in capsys.readouterr().err
