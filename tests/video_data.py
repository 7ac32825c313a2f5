"""Small clips the tests build themselves, written as cameras and phones write them (display matrix, variable
frame rate, index first): the field cases of ../shared/cases, in miniature."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ONE = 65536  # 1.0 in the display matrix's 16.16 fixed point
# the eight right-angle display matrices (a, b, c, d): identity, the three turns, the four mirrors
MATRICES = {"identity": (ONE, 0, 0, ONE), "turn_cw": (0, ONE, -ONE, 0), "turn_180": (-ONE, 0, 0, -ONE),
            "turn_ccw": (0, -ONE, ONE, 0), "mirror_lr": (-ONE, 0, 0, ONE), "mirror_tb": (ONE, 0, 0, -ONE),
            "transpose": (0, ONE, ONE, 0), "anti_transpose": (0, -ONE, -ONE, 0)}


def display_matrix(name: str) -> list[int]:
    """The 9 int32 of AV_FRAME_DATA_DISPLAYMATRIX for one of :data:`MATRICES`."""
    a, b, c, d = MATRICES[name]
    return [a, b, 0, c, d, 0, 0, 0, 1 << 30]


def write_stored(path: Path, frames: list[np.ndarray], matrix: list[int] | None = None,
                 times_ms: list[int] | None = None, options: dict[str, str] | None = None) -> None:
    """Frames as stored pixels (lossless H.264 RGB), with an optional container display matrix and frame times
    (ms; default 25 fps); ``options`` go to the muxer (``movflags=faststart`` puts the index first)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264rgb", rate=25, options={"qp": "0"})
        stream.pix_fmt, stream.height, stream.width = "rgb24", frames[0].shape[0], frames[0].shape[1]
        tb = Fraction(1, 1000) if times_ms is not None else Fraction(1, 25)
        stream.time_base = stream.codec_context.time_base = tb
        if matrix is not None:
            stream.set_display_matrix(matrix)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = (i if times_ms is None else times_ms[i]), tb
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))


def stored_for_display(frame: np.ndarray, name: str) -> np.ndarray:
    """The stored pixels that display as ``frame`` under matrix ``name`` (the inverse turn/mirror)."""
    inverse = {"identity": lambda f: f, "turn_cw": lambda f: np.rot90(f, 1), "turn_180": lambda f: f[::-1, ::-1],
               "turn_ccw": lambda f: np.rot90(f, -1), "mirror_lr": lambda f: f[:, ::-1],
               "mirror_tb": lambda f: f[::-1], "transpose": lambda f: f.transpose(1, 0, 2),
               "anti_transpose": lambda f: f[::-1, ::-1].transpose(1, 0, 2)}
    return np.ascontiguousarray(inverse[name](frame))


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> None:
    """The first ``fraction`` of a file's bytes: an upload cut short."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
