"""`sganc-stream` command line: each sub-module registers its sub-commands.

A sub-module exposes ``register(subparsers)``; each sub-command sets ``func(args) -> int``.
Errors derived from :class:`SgancError` (and OS errors at file boundaries) become one line on stderr, and so does
each :class:`InputWarning` (the command goes on).
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        with warnings_as_lines(f"sganc-stream {args.command}"):
            return int(args.func(args) or 0)
    except SgancError as exc:
        print(f"sganc-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"sganc-stream {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sganc-stream {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
