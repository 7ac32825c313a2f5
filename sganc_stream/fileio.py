"""Atomic output files: a failed or interrupted write never leaves a file that looks complete."""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from sganc_stream.errors import InputError


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block finishes."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{parent}: output folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """An array from a ``.npy`` file (no pickles); InputError in one line for anything unreadable.

    The header is checked against the file size before anything is allocated: a forged header cannot make
    the reader ask for more memory than the file holds.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with p.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(f)
            held = os.fstat(f.fileno()).st_size - f.tell()
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (tokenize, literal_eval) raises assorted types
        raise InputError(f"{p}: not a readable .npy array ({' '.join(str(exc).split())[:80]})") from None
    if dtype.hasobject:
        raise InputError(f"{p}: .npy array of Python objects (only numeric arrays are read)")
    needed = math.prod(shape) * dtype.itemsize
    if needed > held:
        raise InputError(f"{p}: .npy header claims {dtype} {tuple(shape)} ({needed} bytes) but the file holds {held}")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npy array ({' '.join(str(exc).split())[:80]})") from None


def write_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through :func:`atomic_output` (no pickled objects)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
