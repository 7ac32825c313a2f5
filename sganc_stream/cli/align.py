"""`sganc-stream align`: FFHQ-align the face in a video or an image folder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sganc_stream.errors import InputError
from sganc_stream.face.landmarks import BACKENDS
from sganc_stream.face.tracker import REDETECT_EVERY, AlignedFace, FaceFlags, VideoAligner
from sganc_stream.fileio import output_folder, output_stems
from sganc_stream.video import IMAGE_SUFFIXES, VIDEO_FORMATS, VideoReader, VideoWriter, video_format


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align", help="FFHQ-align faces in a video or image folder",
        description="Crop the face in every frame the way FFHQ was aligned (dlib 68 landmarks, NVlabs recipe), "
                    "tracked and smoothed over time. A video is written as a video of crops (every frame; a frame "
                    "with no face keeps the last crop and is flagged). A folder of images is aligned image by image "
                    "(faceless images are skipped and flagged) unless --sequence says they are frames of one video.")
    parser.add_argument("input", type=Path, help="video file or folder of .png/.jpg images")
    parser.add_argument("output", type=Path,
                        help=f"video file ({', '.join(VIDEO_FORMATS)}) or folder (no suffix) for .png crops")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    parser.add_argument("--landmarks", choices=BACKENDS, default="dlib",
                        help="landmark backend: dlib (offline, the FFHQ tool; default) or fan (downloads weights)")
    parser.add_argument("--json", type=Path, metavar="QUADS.json", help="write per-frame quads and flags here")
    parser.add_argument("--sequence", action="store_true", help="treat an image folder as video frames (track)")
    parser.add_argument("--no-smooth", action="store_true", help="raw per-frame recipe quads (no temporal filter)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.size < 8:
        raise InputError(f"--size must be at least 8, got {args.size}")
    stills = args.input.is_dir() and not args.sequence
    to_video = bool(args.output.suffix) and not args.output.is_dir()
    if to_video:
        video_format(args.output)  # an unknown suffix is refused before any work
    names = _frame_names(args.input)
    stems = dict(zip(names, output_stems(names))) if names else {}  # photo.jpg and photo.png: distinct crops
    with VideoReader(args.input) as reader:
        aligner = VideoAligner(args.size, args.landmarks, smoothing=not (stills or args.no_smooth), fps=reader.fps,
                               redetect_every=1 if stills else REDETECT_EVERY)
        if to_video:
            with VideoWriter(args.output, reader.fps) as writer:
                records = _align_all(reader, aligner, stills, names, lambda crop, _, t: writer.write(crop, t))
        else:
            with output_folder(args.output):  # removed again if this run made it and fails before any crop
                # A folder input's crops keep their images' stems; a video's are named by frame index.
                records = _align_all(reader, aligner, stills, names,
                                     lambda crop, name, _: _write_png(args.output / f"{stems.get(name, name)}.png",
                                                                      crop))
    if args.json:
        payload = {"input": str(args.input), "size": args.size, "landmarks": args.landmarks, "fps": reader.fps,
                   "smoothing": aligner.smoother is not None, "frames": records}
        args.json.write_text(json.dumps(payload))
    faceless = sum(1 for r in records if "NO_FACE" in r["flags"])
    print(f"aligned {len(records)} frames ({faceless} without a face) → {args.output}")
    return 0


def _align_all(reader: VideoReader, aligner: VideoAligner, stills: bool, names: list[str] | None,
               write: Callable[[np.ndarray, str, float], None]) -> list[dict]:
    """Align every frame, hand each crop to ``write`` (with its name for folders, and its presentation time);
    per-frame records for --json."""
    records = []
    timed = tqdm(reader.timed(), total=reader.frame_count, unit="frame", desc="align")
    for index, (frame, time) in enumerate(timed):
        if stills:
            aligner.reset()
        face = aligner.align(frame, None if stills else time)
        name = names[index] if names else f"{index:06d}"
        records.append(_record(index, name if names else None, face))
        if stills and face.flags & FaceFlags.NO_FACE:
            continue  # a photo without a face has no crop worth keeping
        write(face.crop, name, time)
    return records


def _frame_names(path: Path) -> list[str] | None:
    """Image file names of a folder input, in the reader's (sorted) order; None for a video."""
    if not path.is_dir():
        return None
    return sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _record(index: int, name: str | None, face: AlignedFace) -> dict:
    flags = [flag.name for flag in FaceFlags if flag in face.flags]
    record = {"index": index, "quad": [[round(float(v), 3) for v in corner] for corner in face.quad.corners()],
              "flags": flags}
    if name is not None:
        record["name"] = name
    return record


def _write_png(path: Path, crop: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write image {path}")
