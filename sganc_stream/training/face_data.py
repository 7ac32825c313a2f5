"""Prepare aligned face training data: FFHQ-align photos and clip frames, split by identity.

Output folder: ``faces.npy`` (N, size, size, 3) uint8 aligned crops, ``index.csv`` (one row per crop: source file,
frame, identity, split, kind) and ``prep.json`` (settings and counts, skipped photos included). The split is by
identity, never by file: a held-out identity's photos and clips are all in ``val``, so validation measures faces the
models never saw. Photos (UTKFace, mixed_real) are each their own identity; clips take MANIFEST ``identity_hint``, or
a name rule that groups clips of one person (MEAD M030, Obama, ...) and, conservatively, whole folders whose
people are not named (VoxCeleb ``pcavs``, ``liveportrait`` drivers, ``edtalk``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sganc_stream.errors import InputError
from sganc_stream.fileio import load_npy
from sganc_stream.face.tracker import FaceFlags, VideoAligner
from sganc_stream.video import VideoReader

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
UNNAMED_CLIP_FOLDERS = ("pcavs", "liveportrait", "edtalk")  # people not named; some repeat across clips
MEAD_FOLDERS = ("dreamtalk_mead", "mead_eamm")  # MEAD actor M030 throughout
INDEX_FIELDS = ("i", "source", "frame", "identity", "split", "kind")


def split_of(identity: str, val_fraction: float, salt: str = "sganc-split-v1") -> str:
    """'val' or 'train' from a hash of the identity: stable across runs, machines and data order."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{identity}".encode()).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def clip_identity(relpath: str, hint: str = "") -> str:
    """Identity label of a clip: its MANIFEST hint, else a rule on its folder and name."""
    if hint.strip():
        return hint.strip().lower()
    parts = Path(relpath).parts
    folder, stem = parts[0].lower(), Path(relpath).stem.lower()
    if folder in MEAD_FOLDERS or stem.startswith("m030"):
        return "m030"
    if "obama" in stem:
        return "obama"
    if folder in UNNAMED_CLIP_FOLDERS:
        return folder
    return re.sub(r"(_clip_?\d+.*|_short|_\d+)$", "", stem)


@dataclass
class PreparedFaces:
    """Aligned crops and their index rows (dicts with INDEX_FIELDS)."""

    images: np.ndarray
    index: list[dict[str, str]]

    def select(self, split: str | None = None, kind: str | None = None) -> np.ndarray:
        """Row numbers of one split and/or kind ('photo' or 'clip')."""
        return np.array([int(r["i"]) for r in self.index
                         if (split is None or r["split"] == split) and (kind is None or r["kind"] == kind)], dtype=np.int64)

    def clip_sequences(self, split: str) -> dict[str, np.ndarray]:
        """Row numbers of each clip of a split, in frame order (consecutive aligned frames)."""
        seqs: dict[str, list[tuple[int, int]]] = {}
        for r in self.index:
            if r["kind"] == "clip" and r["split"] == split:
                seqs.setdefault(r["source"], []).append((int(r["frame"]), int(r["i"])))
        return {k: np.array([i for _, i in sorted(v)], dtype=np.int64) for k, v in seqs.items()}


def load_prepared(folder: str | Path, mmap: bool = True) -> PreparedFaces:
    """Read a prepared folder (``faces.npy`` + ``index.csv``) with one-line errors."""
    folder = Path(folder)
    npy, idx = folder / "faces.npy", folder / "index.csv"
    if not npy.is_file() or not idx.is_file():
        raise InputError(f"{folder}: not a prepared face folder (needs faces.npy and index.csv; run prepare-faces)")
    images = load_npy(npy, mmap=mmap)
    with idx.open(newline="") as f:
        index = list(csv.DictReader(f))
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3 or len(images) != len(index):
        raise InputError(f"{folder}: faces.npy {images.dtype} {images.shape} does not match index.csv ({len(index)} rows)")
    return PreparedFaces(images, index)


def _manifest(root: Path) -> dict[str, dict[str, str]]:
    path = root / "MANIFEST.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _align_photos(root: Path, aligner: VideoAligner, limit: int | None) -> tuple[list[np.ndarray], list[dict], int]:
    crops, rows, skipped = [], [], 0
    files = _files(root, PHOTO_SUFFIXES)[:limit]
    for path in tqdm(files, desc="align photos", unit="img", mininterval=2.0):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped += 1
            continue
        aligner.reset()
        face = aligner.align(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if not face.flags & FaceFlags.DETECTED:  # tight crops often defeat the detector: skip, never guess
            skipped += 1
            continue
        rel = path.relative_to(root).as_posix()
        crops.append(face.crop)
        rows.append({"source": f"faces/{rel}", "frame": "0", "identity": f"photo:{rel}", "kind": "photo"})
    return crops, rows, skipped


def _align_clips(root: Path, size: int, stride: int, max_frames: int, limit: int | None) -> tuple[list[np.ndarray], list[dict], int]:
    manifest = _manifest(root)
    crops, rows, faceless = [], [], 0
    for path in tqdm(_files(root, CLIP_SUFFIXES)[:limit], desc="align clips", unit="clip", mininterval=2.0):
        rel = path.relative_to(root).as_posix()
        identity = "clip:" + clip_identity(rel, manifest.get(rel, {}).get("identity_hint", ""))
        with VideoReader(path) as reader:
            aligner = VideoAligner(size, "dlib", fps=reader.fps)
            kept = 0
            for k, frame in enumerate(reader):
                if kept >= max_frames:
                    break
                face = aligner.align(frame)  # every frame, kept or not: the tracker needs them all
                if k % stride:
                    continue
                if face.flags & FaceFlags.NO_FACE:
                    faceless += 1
                    continue
                crops.append(face.crop)
                rows.append({"source": f"clips/{rel}", "frame": str(k), "identity": identity, "kind": "clip"})
                kept += 1
    return crops, rows, faceless


def prepare_faces(data_root: str | Path, out: str | Path, size: int = 64, *, val_fraction: float = 0.1,
                  clip_val_fraction: float = 0.25, clip_stride: int = 1, clip_max_frames: int = 300,
                  limit: int | None = None) -> dict:
    """Align ``data_root``/faces photos and ``data_root``/clips frames into ``out``; returns the summary written."""
    data_root, out = Path(data_root), Path(out)
    if size < 32 or size & (size - 1):
        raise InputError(f"--size must be a power of two >= 32, got {size}")
    if clip_stride < 1 or clip_max_frames < 1:
        raise InputError("clip stride and max frames must be >= 1")
    faces_root, clips_root = data_root / "faces", data_root / "clips"
    if not faces_root.is_dir() and not clips_root.is_dir():
        raise InputError(f"{data_root}: has neither faces/ nor clips/ (expected ../shared/data)")
    crops: list[np.ndarray] = []
    rows: list[dict] = []
    skipped = faceless = 0
    if faces_root.is_dir():
        c, r, skipped = _align_photos(faces_root, VideoAligner(size, "dlib", smoothing=False, redetect_every=1), limit)
        crops += c
        rows += r
    if clips_root.is_dir():
        c, r, faceless = _align_clips(clips_root, size, clip_stride, clip_max_frames, limit)
        crops += c
        rows += r
    if not crops:
        raise InputError(f"{data_root}: no face could be aligned")
    for i, row in enumerate(rows):
        fraction = clip_val_fraction if row["kind"] == "clip" else val_fraction
        row.update(i=str(i), split=split_of(row["identity"], fraction))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "faces.npy", np.stack(crops))
    with (out / "index.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "data_root": str(data_root), "size": size, "val_fraction": val_fraction, "clip_val_fraction": clip_val_fraction,
        "clip_stride": clip_stride, "clip_max_frames": clip_max_frames, "photos_skipped_no_face": skipped,
        "clip_frames_without_face": faceless, "crops": len(rows),
        "splits": {s: {k: sum(1 for r in rows if r["split"] == s and r["kind"] == k) for k in ("photo", "clip")}
                   for s in ("train", "val")},
        "clip_identities": {s: sorted({r["identity"] for r in rows if r["kind"] == "clip" and r["split"] == s})
                            for s in ("train", "val")},
    }
    (out / "prep.json").write_text(json.dumps(summary, indent=1))
    return summary


def identities(index: Iterable[dict[str, str]], split: str) -> set[str]:
    """Identity labels present in one split."""
    return {r["identity"] for r in index if r["split"] == split}
