"""`sganc-stream weights list|fetch|verify|bundle`: the official FFHQ checkpoints and our model bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from sganc_stream.models import weights as W


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="list, download, verify or bundle model weights")
    parser.add_argument("--dir", type=Path, default=None, help="weights folder (default $SGANC_WEIGHTS_DIR or ~/.cache/sganc-stream/weights)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="known checkpoints, their sources and local state").set_defaults(func=_list)
    p = sub.add_parser("fetch", help="download a checkpoint (records its sha256 on first download)")
    p.add_argument("name", nargs="+", help="name or file name from `weights list`")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("verify", help="check a downloaded checkpoint's sha256")
    p.add_argument("name", nargs="+", help="name or file name from `weights list`")
    p.add_argument("--file", type=Path, default=None, help="check this file instead of the one in the weights folder")
    p.set_defaults(func=_verify)
    p = sub.add_parser("bundle", help="convert a .pt checkpoint (or bundle) into a sganc-stream bundle")
    p.add_argument("source", type=Path, help="rosinality / pSp / e4e .pt, or a bundle")
    p.add_argument("output", type=Path, help="bundle file to write (.safetensors)")
    p.add_argument("--encoder-type", choices=["psp", "e4e"], default=None,
                   help="encoder type for pSp-family files whose opts lack encoder_type (a contradiction is an error)")
    p.set_defaults(func=_bundle)


def _dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir is not None else W.weights_dir()


def _list(args: argparse.Namespace) -> int:
    directory = _dir(args)
    print(f"weights folder: {directory}")
    for entry in W.REGISTRY.values():
        want, basis = W.expected_hash(entry, directory)
        state = "present" if (directory / entry.filename).is_file() else "absent"
        print(f"{entry.name}  {entry.filename}  [{state}]\n  {entry.description}\n  url: {entry.page_url}"
              f"\n  listed at: {entry.source}\n  sha256: {want or 'not published; recorded at first download'}"
              f"{f' ({basis})' if want else ''}\n  licence: {entry.licence}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    directory = _dir(args)
    for name in args.name:
        entry = W.lookup(name)
        path, digest, basis = W.fetch(entry, directory)
        print(f"{entry.name}: {path} sha256 {digest} ({basis})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    directory = _dir(args)
    for name in args.name:
        entry = W.lookup(name)
        path = args.file if args.file is not None else directory / entry.filename
        digest, basis = W.verify(entry, path, directory)
        verdict = "OK" if basis != "none" else "no published or recorded hash to compare"
        print(f"{entry.name}: {path} sha256 {digest}: {verdict}{f' ({basis})' if basis != 'none' else ''}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from sganc_stream.models import load_checkpoint

    from sganc_stream.cli.latents import bundle_line

    model = load_checkpoint(args.source, encoder_type=args.encoder_type)
    model_id = model.save(args.output)
    print(bundle_line(args.output, model_id))
    return 0
