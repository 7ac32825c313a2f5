"""`sganc-stream` command line: each sub-module registers its sub-commands.

A sub-module exposes ``register(subparsers)``; each sub-command sets ``func(args) -> int``.
Errors derived from :class:`SgancError` (and OS errors at file boundaries) become one line on stderr, and so does
each :class:`InputWarning` (the command goes on). Ctrl-C (SIGINT) and SIGTERM (``kill``, a service manager, a
container stop) end a command the same way: its partly written outputs are removed, one line says so, and the exit
status is 128 + the signal number (130, 143), as a shell reports a process the signal killed.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from sganc_stream import __version__
from sganc_stream.errors import ArgumentParser, SgancError, warnings_as_lines

# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES = ["latents", "train", "weights", "align", "transcode", "decode", "demo", "face_model"]
# First arguments that need only some command modules (light to import): only those parsers are built, so a
# decode-only process does not pay for the imports of the other commands (torch, dlib; issue #13 point 4), nor
# does --version.
LIGHT_COMMANDS = {"decode": ["decode"], "--version": []}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only the ones :data:`LIGHT_COMMANDS` names for ``command``."""
    parser = ArgumentParser(prog="sganc-stream", description="sganc-stream: generative face-video codec (StyleGAN2 W+ latents, learned flow, rANS)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in LIGHT_COMMANDS[command] if command in LIGHT_COMMANDS else COMMAND_MODULES:
        importlib.import_module(f"sganc_stream.cli.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it and the
    atomic writers' cleanup (``except BaseException``) removes their partial files."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread (Python's default would end the
    process at once, leaving partial output files behind). Elsewhere (a command run from another thread) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ended_by_signal(prog: str, signum: int) -> int:
    """After Ctrl-C (SIGINT) or SIGTERM: one line ``<prog>: interrupted`` / ``<prog>: terminated`` on stderr, and the
    exit status a shell reports for a process that signal killed (128 + ``signum``: 130, 143). Every console script
    ends this way (``sganc-stream``, and ``sganc-send/-recv/-call/-signal``)."""
    print(f"{prog}: {'interrupted' if signum == signal.SIGINT else 'terminated'}", file=sys.stderr)
    return 128 + signum


def run_command(prog: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status under the console scripts' one contract (``sganc-stream`` and ``sganc-send/-recv/
    -call``): an :class:`SgancError` or an OS error at a file boundary becomes one line ``<prog>: error: ...`` (with
    the file name when the error has one) and status 2; each :class:`InputWarning` one line; Ctrl-C and SIGTERM end
    it as :func:`ended_by_signal` says."""
    try:
        with sigterm_raises(), warnings_as_lines(prog):
            return body()
    except SgancError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return ended_by_signal(prog, signal.SIGINT)
    except Terminated:
        return ended_by_signal(prog, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    return run_command(f"sganc-stream {args.command}", lambda: int(args.func(args) or 0))


if __name__ == "__main__":
    sys.exit(main())
