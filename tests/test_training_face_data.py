"""Face data preparation: alignment of real photos and clips into one array, and an identity-disjoint split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sganc_stream.errors import InputError
from sganc_stream.training.face_data import clip_identity, identities, load_prepared, prepare_faces, split_of
from tests.face_data import CLIPS, FACES, shared_path


def test_split_is_a_stable_function_of_identity() -> None:
    ids = [f"photo:utkface/{i}.jpg" for i in range(2000)]
    first = [split_of(i, 0.1) for i in ids]
    assert first == [split_of(i, 0.1) for i in ids]
    share = first.count("val") / len(first)
    assert 0.07 < share < 0.13


def test_clip_identity_groups_one_person_across_folders() -> None:
    assert clip_identity("dreamtalk_mead/M030_front_angry_level3_001.mp4", "M030") == "m030"
    assert clip_identity("mead_eamm/contempt.mp4") == "m030"
    assert clip_identity("mead_eamm/M030_sad_3_001.mp4") == "m030"
    assert clip_identity("edtalk/uncrop_Obama.mp4") == clip_identity("styletalk/source_video/Obama_clip2.mp4") == "obama"
    assert clip_identity("styletalk/source_video/andrew_clip_1.mp4") == clip_identity("styletalk/source_video/andrew_clip_2.mp4")
    assert clip_identity("styletalk/source_video/feifeili_clip2_short.mp4") == "feifeili"
    assert clip_identity("pcavs/Input/00002.mp4") == clip_identity("pcavs/Audio_Source/00015.mp4")  # unnamed: one group


def _tiny_root(tmp_path: Path) -> Path:
    """A data root of a few real shared photos and two short clips (symlinks), with a clips MANIFEST."""
    photos = sorted((shared_path(FACES, "utkface")).glob("*.jpg"))[:6] + sorted((FACES / "mixed_real").glob("*.jpg"))[:2]
    root = tmp_path / "data"
    for p in photos:
        dst = root / "faces" / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(p)
    clips = ["dreamtalk_mead/M030_front_neutral_level1_001.mp4", "styletalk/source_video/Obama_clip1.mp4"]
    for c in clips:
        dst = root / "clips" / c
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(shared_path(CLIPS, c))
    with (root / "clips" / "MANIFEST.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "identity_hint"])
        w.writerows([[c, "M030" if "M030" in c else ""] for c in clips])
    return root


def test_prepare_faces_aligns_real_data_and_keeps_identities_disjoint(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path)
    out = tmp_path / "prepared"
    summary = prepare_faces(root, out, 64, val_fraction=0.5, clip_val_fraction=0.5, clip_max_frames=4)
    data = load_prepared(out)
    assert data.images.shape[1:] == (64, 64, 3) and data.images.dtype == np.uint8
    assert summary["crops"] == len(data.index) == len(data.images)
    assert summary["crops"] + summary["photos_skipped_no_face"] == 8 + 2 * 4
    assert not identities(data.index, "train") & identities(data.index, "val")
    seqs = {**data.clip_sequences("train"), **data.clip_sequences("val")}
    assert sorted(len(v) for v in seqs.values()) == [4, 4]
    assert data.images[data.select(kind="clip")].std() > 10  # real crops, not blank padding


def test_prepare_faces_refuses_a_folder_without_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither faces/ nor clips/"):
        prepare_faces(tmp_path, tmp_path / "out", 64)
    with pytest.raises(InputError, match="power of two"):
        prepare_faces(tmp_path, tmp_path / "out", 48)
