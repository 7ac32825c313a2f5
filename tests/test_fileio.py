"""Atomic outputs, `.npy` arrays from outside read without trusting their header, distinct output names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sganc_stream.errors import InputError
from sganc_stream.fileio import load_npy, output_stems
from sganc_stream.peak_memory import peak_rss_mb, reset_peak_rss


def _forged(path: Path, shape: tuple[int, ...], dtype: str = "<f4", data: bytes = b"\0" * 64) -> Path:
    """A .npy whose header claims ``shape`` but holds only ``data``: a 1 KB file can ask for terabytes."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data)
    return path


def test_header_claiming_terabytes_is_one_line_and_allocates_nothing(tmp_path: Path) -> None:
    path = _forged(tmp_path / "big.npy", (100_000_000, 18, 512))
    if not reset_peak_rss():
        pytest.skip("this OS cannot reset a process's peak memory (/proc/self/clear_refs)")
    before = peak_rss_mb()
    with pytest.raises(InputError) as caught:
        load_npy(path)
    message = str(caught.value)
    need = 128 + 100_000_000 * 18 * 512 * 4  # header block + the claimed data: 3.35 TiB
    assert "\n" not in message and "(100000000, 18, 512)" in message
    assert f"({need:,} bytes) but the file has {path.stat().st_size:,} bytes" in message
    assert peak_rss_mb() - before < 50  # MB: nothing near the claim


@pytest.mark.parametrize("shape,data,match", [((4, 4), b"\0" * 60, "file has"),  # 4 bytes short
                                              ((4, 4), b"\0" * 68, "file has"),  # 4 bytes too many
                                              ((2,), b"", "file has")])
def test_header_and_size_must_agree(tmp_path: Path, shape: tuple[int, ...], data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_npy(_forged(tmp_path / "x.npy", shape, data=data))


def test_good_arrays_load_and_map(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", a)
    assert np.array_equal(load_npy(tmp_path / "a.npy"), a)
    mapped = load_npy(tmp_path / "a.npy", mmap=True)
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    assert np.array_equal(load_npy(tmp_path / "f.npy"), a)


def test_not_npy_and_objects_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t.npy").write_text("hello, not numpy")
    with pytest.raises(InputError, match="not a readable .npy"):
        load_npy(tmp_path / "t.npy")
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        load_npy(tmp_path / "o.npy")
    with pytest.raises(InputError, match="no such file"):
        load_npy(tmp_path / "absent.npy")


def test_output_stems_keep_many_to_one_names_distinct() -> None:
    names = ["interview.mp4", "interview.mkv", "a/Talk.MOV", "a/talk.mp4", "b/talk.mp4", "solo.webm"]
    assert output_stems(names) == ["interview.mp4", "interview.mkv", "a/Talk.MOV", "a/talk.mp4", "b/talk", "solo"]
    assert output_stems(["x.jpg", "y.png"]) == ["x", "y"]
    with pytest.raises(InputError, match="a.jpg and a.jpg.png would write the same output name"):
        output_stems(["a.jpg", "a.png", "a.jpg.png"])
