"""`sganc-stream` command line: each sub-module registers its sub-commands.

A sub-module exposes ``register(subparsers)``; each sub-command sets ``func(args) -> int``.
Errors derived from :class:`SgancError` (and OS errors at file boundaries) become one line on stderr, and so does
each :class:`InputWarning` (the command goes on).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sganc_stream.errors import SgancError, warnings_as_lines

# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES = ["latents", "train", "weights", "align", "transcode", "decode", "demo", "face_model"]
# Commands whose module is light to import: run as the first argument, only that module's parser is built, so a
# decode-only process does not pay for the imports of the other commands (torch, dlib; issue #13 point 4).
LIGHT_COMMANDS = {"decode": "decode"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only the one of ``command`` when it is in :data:`LIGHT_COMMANDS`."""
    parser = argparse.ArgumentParser(prog="sganc-stream", description="sganc-stream: generative face-video codec (StyleGAN2 W+ latents, learned flow, rANS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [LIGHT_COMMANDS[command]] if command in LIGHT_COMMANDS else COMMAND_MODULES:
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
