"""The tracker's same-person threshold: dlib descriptor distances between faces of one clip and of different people.

    python benchmarks/tracking_identity.py [--frames-per-clip 5]

The aligner (``sganc_stream.face.tracker``) decides whether a face it finds again is the main speaker, and whether
the coded person changed, from dlib face descriptors. dlib's own threshold, 0.6, is made for unconstrained photos
(LFW); inside one video a person's descriptors lie much closer together, and 0.6 calls some different people the
same (two East Asian men of the shared clips: 0.51). This script measures, on the shared clips with known
identities, the distances between frames spread over one clip (same person, same session: what re-finding a face
looks like), between clips of one person recorded on other occasions, and between different people, and prints
the margin around the tracker's threshold. Writes benchmarks/results/tracking_identity.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from common import write_result
from sganc_stream.face.identity import chip_descriptor, face_chip
from sganc_stream.face.landmarks import DlibLandmarks
from sganc_stream.face.tracker import SAME_TRACKED_PERSON
from sganc_stream.video import VideoReader

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
PEOPLE = {  # identity -> clips (file names say who; MEAD's M030 is one actor)
    "M030": ["dreamtalk_mead/M030_front_neutral_level1_001.mp4", "dreamtalk_mead/M030_front_happy_level3_001.mp4",
             "mead_eamm/M030_sad_3_001.mp4"],
    "obama": ["styletalk/source_video/Obama_clip1.mp4", "styletalk/source_video/Obama_clip2.mp4"],
    "andrew": ["styletalk/source_video/andrew_clip_1.mp4", "styletalk/source_video/andrew_clip_2.mp4"],
    "feifeili": ["styletalk/source_video/feifeili_clip1.mp4", "styletalk/source_video/feifeili_clip3.mp4"],
    "noem": ["styletalk/source_video/KristiNoem.mp4"],
    "reagan": ["styletalk/source_video/reagan_clip1.mp4"],
    "trump": ["styletalk/style_clips/trump_clip1.mp4"],
    "ocasio-cortez": ["sadtalker_hdtf/WDA_AlexandriaOcasioCortez_000.mp4"],
    "hill": ["sadtalker_hdtf/WDA_KatieHill_000.mp4"],
    "may": ["real3dportrait/May_5s.mp4"],
}


def clip_descriptors(backend: DlibLandmarks, path: Path, count: int) -> list[np.ndarray]:
    """Descriptors of the largest face in ``count`` frames spread evenly over the clip."""
    with VideoReader(path) as reader:
        frames = list(reader)
    out = []
    for i in np.linspace(0, len(frames) - 1, count).round().astype(int):
        boxes = backend.detect(frames[i])
        if not boxes:
            continue
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        out.append(chip_descriptor(face_chip(frames[i], backend.landmarks(frames[i], box))))
    return out


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"n": len(a), "min": float(a.min()), "p5": float(np.percentile(a, 5)), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames-per-clip", type=int, default=5)
    args = ap.parse_args()
    backend = DlibLandmarks()
    desc: dict[tuple[str, str], list[np.ndarray]] = {}
    for who, clips in PEOPLE.items():
        for clip in clips:
            if not (CLIPS / clip).is_file():
                print(f"skipped {clip}: absent", file=sys.stderr)
                continue
            desc[(who, clip)] = clip_descriptors(backend, CLIPS / clip, args.frames_per_clip)
    dist = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    within = [dist(a, b) for d in desc.values() for a, b in itertools.combinations(d, 2)]
    occasions, different, closest = [], [], (np.inf, "")
    for (w1, c1), (w2, c2) in itertools.combinations(desc, 2):
        pairs = [dist(a, b) for a in desc[(w1, c1)] for b in desc[(w2, c2)]]
        (occasions if w1 == w2 else different).extend(pairs)
        if w1 != w2 and min(pairs) < closest[0]:
            closest = (min(pairs), f"{c1} vs {c2}")
    result = {"threshold": SAME_TRACKED_PERSON, "dlib_threshold": 0.6, "frames_per_clip": args.frames_per_clip,
              "same_clip": stats(within), "same_person_other_occasion": stats(occasions),
              "different_people": stats(different), "closest_different_pair": closest[1],
              "different_below_0.6": sum(d < 0.6 for d in different),
              "different_below_threshold": sum(d < SAME_TRACKED_PERSON for d in different),
              "same_clip_above_threshold": sum(d >= SAME_TRACKED_PERSON for d in within)}
    path = write_result("tracking_identity", result)
    for k in ("same_clip", "same_person_other_occasion", "different_people"):
        s = result[k]
        print(f"{k:28s} n={s['n']:4d}  min {s['min']:.3f}  p5 {s['p5']:.3f}  median {s['median']:.3f}  "
              f"p95 {s['p95']:.3f}  max {s['max']:.3f}")
    print(f"threshold {SAME_TRACKED_PERSON}: {result['same_clip_above_threshold']} same-clip pairs above it, "
          f"{result['different_below_threshold']} different-people pairs below it "
          f"(at dlib's 0.6: {result['different_below_0.6']}); closest different pair: {closest[1]} {closest[0]:.3f}")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
