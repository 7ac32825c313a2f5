"""Files at the boundary: atomic outputs (a failed or interrupted write never leaves a file that looks complete),
distinct output names for many inputs, and ``.npy`` arrays from outside read without trusting their header."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sganc_stream.errors import InputError


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block finishes. InputError (one
    line, before anything is written) as :func:`check_writable`."""
    path = Path(path)
    check_writable(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail before any work if an output cannot be created where asked: InputError for a directory, a missing or a
    read-only folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: folder {parent} is not writable")


@contextmanager
def output_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Create the output folder ``path`` (and missing parents) for the block. If the block raises, the folders this
    call created are removed again while empty, so a refused run (an unreadable input, no face) leaves nothing
    behind; a folder that existed before, or holds files, is kept. InputError (one line) if it cannot be created."""
    path = Path(path)
    created = []  # the folders this call makes, deepest first
    folder = path
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    try:
        yield path
    except BaseException:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty: keep it and its parents
                break
        raise


STREAM_SUFFIX = ".sgnc"


def check_stream_output(path: str | os.PathLike[str], suggestion: str = "") -> None:
    """The one check of an output that receives an SGNC stream, before any work: :func:`check_writable`, and its name
    ends in ``.sgnc`` (a stream named ``out.mp4`` would pass for a video no player can open). InputError, one
    line, ending in ``suggestion`` when given (what to pass instead, e.g. ``--recon out.mp4`` for a video)."""
    path = Path(path)
    check_writable(path)
    if path.suffix.lower() != STREAM_SUFFIX:
        hint = f"; {suggestion}" if suggestion else ""
        raise InputError(f"cannot write {path}: an SGNC stream's name must end in {STREAM_SUFFIX}{hint}")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def load_npy(path: str | os.PathLike[str], *, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` array from outside, its header checked against the file size before anything is allocated.

    A header that claims more (or less) data than the file holds, an object dtype (pickles are never loaded) or
    a file that is not ``.npy`` at all is a one-line InputError. ``mmap=True`` maps the data read-only instead of
    reading it. Format: numpy's NEP 1 ``.npy``, versions 1.0 and 2.0 (what ``np.save`` writes for numeric arrays).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = _NPY_HEADERS.get(version)
            if read_header is None:
                raise ValueError(f".npy version {version[0]}.{version[1]} is not read here")
            shape, _, dtype = read_header(f)  # numpy's own parser: a literal dict, no code run
            offset = f.tell()
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (tokenize, literal_eval) raises assorted types
        raise InputError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: .npy holds Python objects ({dtype}); only numeric arrays are read")
    count = int(np.prod(shape, dtype=object))  # exact: no overflow for a forged shape
    need, have = offset + count * dtype.itemsize, path.stat().st_size
    if need != have:
        raise InputError(f"{path}: .npy header claims a {dtype} array of shape {tuple(shape)} ({need:,} bytes) but "
                         f"the file has {have:,} bytes")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:80]


def output_stems(relpaths: Sequence[str]) -> list[str]:
    """Output names (without suffix) for inputs mapped many-to-one into one folder tree, all distinct.

    ``relpaths``: '/'-separated input paths relative to their root, with suffixes. Each maps to itself without its
    suffix, unless two inputs would then share a name (``interview.mp4`` and ``interview.mkv``; compared without
    case, as on macOS and Windows), in which case those keep their suffix (``interview.mp4``, ``interview.mkv``) and
    their outputs become ``interview.mp4.sgnc``, ``interview.mkv.sgnc``. An InputError names any clash left.
    """
    def stem(rel: str) -> str:
        name = rel.rsplit("/", 1)[-1]
        return rel[: len(rel) - len(Path(name).suffix)]

    counts = Counter(stem(r).casefold() for r in relpaths)
    stems = [stem(r) if counts[stem(r).casefold()] == 1 else r for r in relpaths]
    seen: dict[str, str] = {}
    for rel, out in zip(relpaths, stems):
        other = seen.setdefault(out.casefold(), rel)
        if other != rel:
            raise InputError(f"{other} and {rel} would write the same output name {out!r}: rename one")
    return stems


def write_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through :func:`atomic_output` (no pickled objects)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
