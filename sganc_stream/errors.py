"""Exceptions raised at the boundaries; the CLI prints them as one line and exits non-zero. Warnings about inputs
(:class:`InputWarning`) are printed as one line too, and the command carries on."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
import typing
from typing import Any

from tqdm import tqdm


class SgancError(Exception):
    """Base class: the message is a complete, user-facing sentence fragment naming the problem."""


class InputError(SgancError):
    """A file, array or argument from outside is unusable (wrong shape, unreadable, missing)."""


class BitstreamError(SgancError):
    """An .sgnc file or packet is malformed: bad magic, unknown version, truncated, corrupted."""


class ModelMismatchError(SgancError):
    """A stream was made with a different model than the one loaded for decoding."""


class CheckpointError(SgancError):
    """A checkpoint or bundle is missing keys, has wrong shapes, or would run code to load."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit status 2), not a usage block.

    Sub-command parsers made by ``add_subparsers`` are of this class too (argparse passes the parent's class).
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def extra_hint(extra: str) -> str:
    """How to install the optional extra ``extra`` (pyproject.toml ``[project.optional-dependencies]``)."""
    return f"pip install 'sganc-stream[{extra}]' (in a checkout: pip install -c requirements.lock -e '.[{extra}]')"


def import_extra(extra: str, needed_by: str, *modules: str) -> ModuleType:
    """Import the modules of an optional extra and return the first; the one check for a missing extra.

    ``needed_by`` names what asked for it (``--engine ray``, ``sganc-call``). Raises InputError, one line naming the
    extra and how to install it (:func:`extra_hint`), when any of
    ``modules`` cannot be imported."""
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            raise InputError(f"{needed_by} needs {name}, which is not installed: {extra_hint(extra)}") from None
    return loaded[0]


class InputWarning(UserWarning):
    """An input is usable but not what it claims (a file that ends before its declared length, say); the CLI
    prints it as one line on stderr and carries on."""


@contextmanager
def warnings_as_lines(prog: str) -> Iterator[None]:
    """Inside the block every :class:`InputWarning` is shown, each time, as ``PROG: warning: ...`` on stderr (above
    any progress bar); other warnings are shown as Python shows them."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, InputWarning):
            tqdm.write(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        shown = warnings.showwarning
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show
        yield
