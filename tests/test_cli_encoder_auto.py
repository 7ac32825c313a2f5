"""``--inter-context``, ``--drift-damping`` and ``--rounding-offset`` default to ``auto``: the encoder the model's
tables were fitted for (its ``tables_encoder``, from fit-context-tables), where the stream's mode can use it;
resolved once (``latent.codec.resolve_encoder_choices``), so StreamParams, the header and the report name concrete
choices."""

from __future__ import annotations

import argparse
import copy
import dataclasses

import pytest

from sganc_stream.cli.options import (add_context_argument, add_encoder_arguments, check_stream_arguments,
                                      stream_params_from)
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import resolve_encoder_choices
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.quantize import ROUNDING_OFFSET
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.training.latent_codec import fit_context

from conftest import TINY_ROWS, TINY_WIDTH
from test_cli_residual_auto import _args

SHIPPED_FIT = {"mode": "open", "g": 10, "drift_damping": 0.5, "rounding_offset": 1 / 6, "decimation": 2}


@pytest.fixture(scope="module")
def fitted(tiny_codec: LatentCodecModel) -> LatentCodecModel:
    """The tiny codec with temporal-context tables and the shipped model's record of what they were fitted for."""
    model = copy.copy(tiny_codec)
    seqs = [synthetic_latents(k, 40, TINY_ROWS, TINY_WIDTH, seed=i) for i, k in enumerate(["smooth", "walk"] * 3)]
    model.context_tables = fit_context(model, seqs, classes=4)
    model.tables_encoder = dict(SHIPPED_FIT)
    return model


def _file_args(*argv: str) -> argparse.Namespace:
    """The options of a command that writes files (transcode, demo, latents encode)."""
    return _args(*argv, adders=(add_context_argument,))


def _call_args(*argv: str) -> argparse.Namespace:
    """The call's options: no --inter-context (its headers cannot name one)."""
    return _args(*argv, adders=(add_encoder_arguments,))


@pytest.mark.parametrize("argv, expected", [
    ((), ("temporal", 0.5, 1 / 6)),  # open mode: everything the tables were fitted for
    (("--mode", "closed"), ("temporal", 0.0, 1 / 6)),  # the closed loop has no drift to damp
    (("--mode", "intra"), ("factorized", 0.0, ROUNDING_OFFSET)),  # no inter differences at all
    (("--inter-context", "factorized"), ("factorized", 0.5, 1 / 6)),  # an explicit choice is kept
    (("--drift-damping", "0", "--rounding-offset", "0.5"), ("temporal", 0.0, 0.5)),
    (("--drift-damping", "0.25"), ("temporal", 0.25, 1 / 6)),
    (("--drift-damping", "AUTO", "--rounding-offset", "1/6"), ("temporal", 0.5, 1 / 6)),  # as the help writes it
    (("--rounding-offset", "1/4"), ("temporal", 0.5, 0.25)),
])
def test_auto_is_what_the_tables_were_fitted_for(fitted: LatentCodecModel, argv: tuple[str, ...],
                                                  expected: tuple[str, float, float]) -> None:
    args = _file_args(*argv)
    params = stream_params_from(args, fitted)
    assert (params.inter_context, params.damping, params.rounding_offset) == expected
    assert params.header(fitted, 25.0, 0).context == expected[0]


def test_the_call_takes_damping_and_offset_but_codes_factorized(fitted: LatentCodecModel) -> None:
    params = stream_params_from(_call_args(), fitted)
    assert (params.inter_context, params.damping, params.rounding_offset) == ("factorized", 0.5, 1 / 6)


def test_a_model_without_a_record_or_tables_codes_the_papers_way(tiny_codec: LatentCodecModel,
                                                                  fitted: LatentCodecModel) -> None:
    assert tiny_codec.tables_encoder is None and not tiny_codec.context_tables
    params = stream_params_from(_file_args(), tiny_codec)
    assert (params.inter_context, params.damping, params.rounding_offset) == ("factorized", 0.0, ROUNDING_OFFSET)
    unrecorded = dataclasses.replace(fitted, tables_encoder=None)  # tables, but no record of their encoder
    params = stream_params_from(_file_args(), unrecorded)
    assert (params.inter_context, params.damping, params.rounding_offset) == ("temporal", 0.0, ROUNDING_OFFSET)
    garbled = dataclasses.replace(fitted, tables_encoder={"drift_damping": "half", "rounding_offset": True})
    assert resolve_encoder_choices("auto", "auto", "auto", "open", garbled) == ("temporal", 0.0, ROUNDING_OFFSET)
    # before a model is loaded, auto stands for the paper's coding: valid in every mode
    for mode in ("open", "closed", "intra"):
        check_stream_arguments(_file_args("--mode", mode))


def test_explicit_bad_choices_are_one_line_errors_before_a_model(fitted: LatentCodecModel,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="^drift damping must be between 0 and 1, got 2.0$"):
        check_stream_arguments(_file_args("--drift-damping", "2"))
    with pytest.raises(InputError, match=r"drift damping is for open mode \(closed mode has no drift to damp\)"):
        check_stream_arguments(_file_args("--mode", "closed", "--drift-damping", "0.5"))
    with pytest.raises(InputError, match=r"\(intra mode has no drift to damp\)"):
        check_stream_arguments(_file_args("--mode", "intra", "--drift-damping", "0.5"))
    with pytest.raises(InputError, match="temporal context codes inter differences"):
        check_stream_arguments(_file_args("--mode", "intra", "--inter-context", "temporal"))
    with pytest.raises(SystemExit):  # argparse: not auto, not a number; one usage line naming the option
        _file_args("--rounding-offset", "dead")
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --rounding-offset: expected auto or a number such as 0.5 or 1/6, got 'dead'")
    with pytest.raises(InputError, match="no temporal-context tables"):
        stream_params_from(_file_args("--inter-context", "temporal"), dataclasses.replace(fitted, context_tables=[]))
