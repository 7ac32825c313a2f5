"""Video I/O shared by the pipeline, the benchmark and the live call.

Frames are always uint8 RGB arrays of shape (H, W, 3). Reading goes through PyAV (any container/codec FFmpeg
decodes) or a folder of images. A reader shows frames as players do: the container's display matrix (phone clips
stored sideways, mirrored front cameras) is applied, and every frame keeps its presentation time (variable frame
rate included). Writing picks the format the file suffix names (:data:`VIDEO_FORMATS`): H.264 in .mp4/.m4v/.mov/
.mkv, VP9 in .webm, .gif, animated PNG in .png; ``lossless`` makes the H.264 and VP9 outputs bit-exact
(libx264rgb qp 0, VP9 lossless RGB) so decoded frames can be compared exactly. Writes are atomic: the target name
only ever holds a complete file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from sganc_stream.errors import InputError, InputWarning
from sganc_stream.fileio import check_writable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_INPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")  # what folder walks pick up as clips
MS = Fraction(1, 1000)  # time base of timed writes: the bitstream's packet timestamps are milliseconds


@dataclass(frozen=True)
class VideoFormat:
    """How a video output suffix is written: encoder, pixel format and options, lossy and lossless."""

    name: str
    codec: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)
    lossless: tuple[str, str, dict[str, str]] | None = None  # (codec, pix_fmt, options); None: cannot be lossless
    container: str | None = None  # FFmpeg muxer when the suffix alone does not select it

    def encoder(self, lossless: bool) -> tuple[str, str, dict[str, str]]:
        if not lossless:
            return self.codec, self.pix_fmt, self.options
        assert self.lossless is not None
        return self.lossless


_H264 = VideoFormat("H.264", "libx264", "yuv420p", {"crf": "18"}, ("libx264rgb", "rgb24", {"qp": "0"}))
VIDEO_FORMATS: dict[str, VideoFormat] = {
    ".mp4": _H264, ".m4v": _H264, ".mov": _H264, ".mkv": _H264,  # not .avi: REFUSED_OUTPUTS
    # VP9 as browsers record and play it; lossless: VP9 profile 1 in planar RGB, which converts back exactly
    ".webm": VideoFormat("VP9", "libvpx-vp9", "yuv420p",
                         {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
                         ("libvpx-vp9", "gbrp", {"lossless": "1"})),
    # a palette of at most 256 colours per frame (FFmpeg's palettegen/paletteuse), so never lossless
    ".gif": VideoFormat("GIF", "gif", "pal8"),
    ".png": VideoFormat("animated PNG", "apng", "rgb24", lossless=("apng", "rgb24", {}), container="apng"),
}

# output suffixes that are video formats, refused with the reason (readable as inputs all the same)
REFUSED_OUTPUTS = {".avi": "AVI cannot hold presentation times, so variable frame timing would be lost"}


def video_format(path: str | os.PathLike[str], lossless: bool = False) -> VideoFormat:
    """The format ``path``'s suffix names: the one check of a video output, before any work.

    A one-line InputError for a folder that is missing or read-only, or a directory at ``path``
    (:func:`~sganc_stream.fileio.check_writable`), a suffix that is not in :data:`VIDEO_FORMATS`, ``lossless`` for a
    format that cannot hold frames exactly (.gif), and an encoder missing from this PyAV build.
    """
    path = Path(path)
    check_writable(path)
    fmt = VIDEO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        names = ", ".join(VIDEO_FORMATS)
        why = REFUSED_OUTPUTS.get(path.suffix.lower(), f"unknown suffix {path.suffix or '(none)'!r}")
        raise InputError(f"cannot write video {path}: {why} (use one of {names})")
    if lossless and fmt.lossless is None:
        raise InputError(f"cannot write {path} losslessly: {fmt.name} holds at most 256 colours a frame "
                         f"(use .png, .mkv, .mp4 or .webm)")
    codec = fmt.encoder(lossless)[0]
    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError) as error:  # UnknownCodecError is a ValueError
        raise InputError(f"cannot write {path}: this PyAV build has no {codec} encoder for {fmt.name}") from error
    return fmt


def _one_line(error: BaseException) -> str:
    """Error text without newlines, so an InputError stays one line; for an OSError or FFmpegError only its reason
    (``Invalid data found when processing input``), without the errno and file name the message already gives."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(text.split()) or type(error).__name__


def _read_image(path: Path) -> np.ndarray:
    """One image file as RGB uint8; InputError if OpenCV cannot decode it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_frame(frame: np.ndarray) -> np.ndarray:
    """Validate one frame from outside: uint8, (H, W, 3); returns it C-contiguous."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InputError(f"expected a uint8 RGB frame of shape (H, W, 3), got {dtype} {shape}")
    return np.ascontiguousarray(frame)


def resize_square(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` or ``(n, H, W, 3)`` → the same at ``side`` x ``side`` (returned as is when already so).

    Area averaging when shrinking (no aliasing: metrics at a face's own size), bilinear when enlarging (display).
    """
    if frames.shape[-3:-1] == (side, side):
        return frames
    if frames.ndim == 4:
        return np.stack([resize_square(f, side) for f in frames]) if len(frames) else np.empty((0, side, side, 3), np.uint8)
    interp = cv2.INTER_AREA if min(frames.shape[:2]) > side else cv2.INTER_LINEAR
    return cv2.resize(frames, (side, side), interpolation=interp)


@dataclass(frozen=True)
class Orientation:
    """How stored pixels are shown: transpose, then mirror left-right (``flip_x``) and/or top-bottom (``flip_y``).

    The eight combinations are the rotations by 0/90/180/270° with and without a mirror (the EXIF orientations).
    """

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Stored (H, W, 3) → displayed (W, H, 3) when transposed, else (H, W, 3); C-contiguous."""
        if self.transpose:
            frame = frame.transpose(1, 0, 2)
        if self.flip_x:
            frame = frame[:, ::-1]
        if self.flip_y:
            frame = frame[::-1]
        return np.ascontiguousarray(frame)

    def __str__(self) -> str:
        names = {(False, False, False): "as stored", (False, True, True): "turned 180°",
                 (True, True, False): "turned 90° clockwise", (True, False, True): "turned 90° counter-clockwise",
                 (False, True, False): "mirrored left-right", (False, False, True): "mirrored top-bottom",
                 (True, False, False): "transposed", (True, True, True): "anti-transposed"}
        return names[(self.transpose, self.flip_x, self.flip_y)]


def orientation_from_matrix(matrix: np.ndarray) -> Orientation | None:
    """The :class:`Orientation` of an FFmpeg display matrix, or None when it is not a right-angle turn/mirror.

    ``matrix``: the 9 int32 of ``AV_FRAME_DATA_DISPLAYMATRIX`` (libavutil/display.h), row-major
    ``[a, b, u, c, d, v, x, y, w]`` with a–d in 16.16 fixed point; it maps a stored pixel (p, q) (x right, y down)
    to the displayed (a·p + c·q, b·p + d·q) plus a translation. Right-angle matrices are the eight signed
    permutations, and this is what FFmpeg's autorotation (fftools' transpose/hflip/vflip choice) and players do.
    """
    a, b, c, d = (float(matrix[i]) / 65536.0 for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0.0:
        return None
    a, b, c, d = (v / scale for v in (a, b, c, d))
    tol = 1e-3
    if abs(b) < tol and abs(c) < tol and abs(abs(a) - 1) < tol and abs(abs(d) - 1) < tol:
        return Orientation(False, a < 0, d < 0)  # x' = ±x, y' = ±y
    if abs(a) < tol and abs(d) < tol and abs(abs(b) - 1) < tol and abs(abs(c) - 1) < tol:
        return Orientation(True, c < 0, b < 0)  # x' = c·y, y' = b·x: transpose, then the signs
    return None


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    for side in frame.side_data:
        if getattr(side.type, "name", "") == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side), dtype=np.int32)[:9]
    return None


class VideoReader:
    """Decoded frames of a video file or an image folder (sorted .png/.jpg/.jpeg), as players show them.

    ``fps`` is the stream's average rate (``image_fps`` for folders, which carry none), ``frame_count`` the number
    of frames the container declares (None when it declares none), ``size`` is the displayed (width, height).
    ``orientation`` is the container's display matrix (a phone clip stored sideways is turned upright, any of the
    eight right-angle turns and mirrors); other angles are read as stored, with an :class:`InputWarning`.
    The first frame is decoded on open, so an unreadable, non-video or empty input fails here with a one-line
    InputError. Iterating yields frames; :meth:`timed` yields ``(frame, seconds)`` with each frame's presentation
    time from the first frame (variable frame rate kept; ``index / fps`` where a frame carries none). Each pass
    starts again from the first frame, which is what looping a clip needs. A pass that ends before the number of
    frames the container declares (a truncated upload) warns once with :class:`InputWarning`; ``frames_decoded``
    is the length of the last complete pass.
    """

    def __init__(self, path: str | os.PathLike[str], *, image_fps: float = 25.0) -> None:
        self.path = Path(path)
        self._container: av.container.InputContainer | None = None
        self._images: list[Path] = []
        self.orientation = Orientation()
        self.frames_decoded: int | None = None
        self._warned_short = False
        if self.path.is_dir():
            self._images = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise InputError(f"no .png/.jpg/.jpeg images in folder {self.path}")
            first = _read_image(self._images[0])
            self.fps = float(image_fps)
            self.frame_count: int | None = len(self._images)
        else:
            first = self._open_video()
        self.size = (first.shape[1], first.shape[0])

    def _open_video(self) -> np.ndarray:
        """Open the container, read its metadata, decode the first frame (fail early, in one line)."""
        if not self.path.is_file():
            raise InputError(f"video file not found: {self.path}")
        try:
            self._container = av.open(str(self.path), "r")
            if not self._container.streams.video:
                raise InputError(f"no video stream in {self.path}")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise InputError(f"video {self.path} declares no frame rate")
            self.fps = float(rate)
            self.frame_count = stream.frames or None
            first = next(self._container.decode(video=0), None)
            if first is not None:
                self._orient(first)
                first = self.orientation.apply(first.to_ndarray(format="rgb24"))
        except InputError:
            self.close()
            raise
        except (av.FFmpegError, OSError, ValueError) as error:
            self.close()
            raise InputError(f"cannot read video {self.path}: {_one_line(error)}") from error
        if first is None:
            self.close()
            raise InputError(f"video {self.path} has no decodable frames")
        return first

    def _orient(self, frame: av.VideoFrame) -> None:
        """Take the display matrix of the stream's first frame (a stream-level property, as players treat it)."""
        matrix = _display_matrix(frame)
        if matrix is None:
            return
        orientation = orientation_from_matrix(matrix)
        if orientation is None:
            angle = -np.degrees(np.arctan2(float(matrix[1]), float(matrix[0])))
            warnings.warn(InputWarning(f"{self.path}: display matrix turns by {angle:.1f}°, not a multiple of 90°: "
                                       f"frames are read as stored"), stacklevel=3)
        else:
            self.orientation = orientation

    def __iter__(self) -> Iterator[np.ndarray]:
        return (frame for frame, _ in self.timed())

    def timed(self) -> Iterator[tuple[np.ndarray, float]]:
        """``(frame, presentation time in seconds from the first frame)`` for every frame, from the start."""
        if self._images:
            return ((_read_image(p), i / self.fps) for i, p in enumerate(self._images))
        if self._container is None:
            raise InputError(f"video {self.path} is closed")
        return self._frames_from_start()

    def _frames_from_start(self) -> Iterator[tuple[np.ndarray, float]]:
        assert self._container is not None
        n, start = 0, None
        try:
            self._container.seek(0)
            for frame in self._container.decode(video=0):
                t = float(frame.time) if frame.time is not None else n / self.fps
                start = t if start is None else start
                yield self.orientation.apply(frame.to_ndarray(format="rgb24")), t - start
                n += 1
        except av.FFmpegError as error:
            raise InputError(f"cannot decode video {self.path}: {_one_line(error)}") from error
        self.frames_decoded = n
        if self.frame_count is not None and n < self.frame_count and not self._warned_short:
            self._warned_short = True
            warnings.warn(InputWarning(f"{self.path} ended early: {n} of the {self.frame_count} frames its "
                                       f"header declares could be decoded"), stacklevel=2)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | os.PathLike[str], limit: int | None = None) -> list[np.ndarray]:
    """The first ``limit`` (default all) frames of a video file or image folder, in memory."""
    with VideoReader(path) as reader:
        frames = []
        for frame in reader:
            if limit is not None and len(frames) >= limit:
                break
            frames.append(frame)
    return frames


class VideoWriter:
    """Writes uint8 RGB frames to a video file in the format its suffix names (:data:`VIDEO_FORMATS`), atomically.

    An unsupported suffix (or ``lossless`` for .gif) is a one-line InputError here, before any frame is made.
    Default: lossy (H.264 crf 18, VP9 crf 32, GIF with a palette per frame; animated PNG is always exact) — odd
    widths/heights are padded to even by repeating the last column/row where 4:2:0 requires it. ``lossless=True``:
    libx264rgb at qp 0 or VP9 lossless RGB, which decode back bit-exactly (no colour conversion, odd sizes kept).
    Timing: ``write(frame)`` places frames 1/fps apart; ``write(frame, time)`` at ``time`` seconds, rounded to the
    millisecond (a variable frame rate is kept; a time not after the previous frame's is moved 1 ms after it).
    One writer takes either timed or untimed frames. Frames go to a hidden temporary file in the target's folder,
    renamed onto the target by a successful ``close()``; an error (including leaving a ``with`` block by an
    exception) deletes the temporary file and leaves the target untouched.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, *, lossless: bool = False) -> None:
        self.path = Path(path)
        if not fps or fps <= 0:
            raise InputError(f"frame rate must be positive, got {fps}")
        self.fps = float(fps)
        self.format = video_format(self.path, lossless)
        self.codec, self.pix_fmt, self.options = self.format.encoder(lossless)
        self.frame_count = 0
        self._stream: av.video.stream.VideoStream | None = None
        self._timed: bool | None = None
        self._last_pts = -1
        self._palette: av.filter.Graph | None = None
        if not self.path.parent.is_dir():
            raise InputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".part{self.path.suffix}",
                                       dir=self.path.parent)
            os.close(fd)
        except OSError as error:
            raise InputError(f"cannot write {self.path}: {_one_line(error)}") from error
        self._tmp: Path | None = Path(tmp)
        try:
            self._container = av.open(str(self._tmp), "w", format=self.format.container)
        except (av.FFmpegError, OSError, ValueError) as error:
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write video {self.path}: {_one_line(error)}") from error

    def _add_stream(self, width: int, height: int, timed: bool) -> None:
        rate = Fraction(self.fps).limit_denominator(100_000)
        stream = self._container.add_stream(self.codec, rate=rate, options=self.options)
        even = self.pix_fmt.startswith("yuv420")
        stream.pix_fmt = self.pix_fmt
        stream.width = width + width % 2 if even else width
        stream.height = height + height % 2 if even else height
        self._time_base = MS if timed else 1 / rate  # the muxer may change the stream's own on its first packet
        stream.time_base = stream.codec_context.time_base = self._time_base
        self._stream, self._timed = stream, timed
        if self.pix_fmt == "pal8":  # GIF: FFmpeg's per-frame palette (palettegen → paletteuse), streamed
            graph = av.filter.Graph()
            source = graph.add_buffer(width=stream.width, height=stream.height, format="rgb24",
                                      time_base=self._time_base)
            split, palette = graph.add("split"), graph.add("palettegen", "stats_mode=single")
            use, sink = graph.add("paletteuse", "new=1"), graph.add("buffersink")
            source.link_to(split)
            split.link_to(use, 0, 0)
            split.link_to(palette, 1, 0)
            palette.link_to(use, 0, 1)
            use.link_to(sink)
            graph.configure()
            self._palette = graph

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Encode one frame (``time``: presentation time in seconds); all frames must have the first frame's size."""
        frame = check_frame(frame)
        height, width = frame.shape[:2]
        if self._stream is None:
            self._frame_size = (width, height)
            self._add_stream(width, height, time is not None)
        elif (width, height) != self._frame_size:
            self.abort()
            raise InputError(f"frame size {width}x{height} differs from the first frame's "
                             f"{self._frame_size[0]}x{self._frame_size[1]} in {self.path}")
        if (time is not None) != self._timed:
            self.abort()
            raise ValueError("a VideoWriter takes either timed or untimed frames, not both")
        assert self._stream is not None
        pad_w, pad_h = self._stream.width - width, self._stream.height - height
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        pts = self.frame_count if time is None else max(round(time * 1000), self._last_pts + 1)
        video_frame.pts, video_frame.time_base, self._last_pts = pts, self._time_base, pts
        self._encode(video_frame)
        self.frame_count += 1

    def _encode(self, frame: av.VideoFrame | None) -> None:
        """Through the palette graph for GIF (``None`` flushes it), then the encoder and the muxer."""
        assert self._stream is not None
        frames: list[av.VideoFrame | None] = [frame]
        if self._palette is not None:
            self._palette.push(frame)
            frames = []
            while True:
                try:
                    frames.append(self._palette.pull())
                except (av.BlockingIOError, av.EOFError):
                    break
            if frame is None:
                frames.append(None)
        for f in frames:
            try:
                packets = self._stream.encode(f)
            except av.FFmpegError as error:
                self.abort()
                raise InputError(f"cannot write video {self.path}: {_one_line(error)}") from error
            self._mux(packets)

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise InputError(f"cannot write video {self.path}: {_one_line(error)}") from error

    def close(self) -> None:
        """Flush the encoder and move the finished file onto the target name."""
        if self._tmp is None:
            return
        if self._stream is None:
            self.abort()
            raise InputError(f"no frames were written to {self.path}")
        self._encode(None)
        try:
            self._container.close()
            os.chmod(self._tmp, 0o644)  # mkstemp made it private; the finished video is an ordinary file
            os.replace(self._tmp, self.path)
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise InputError(f"cannot write video {self.path}: {_one_line(error)}") from error
        self._tmp = None

    def abort(self) -> None:
        """Drop everything written so far; the target name is left as it was."""
        if self._tmp is None:
            return
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass  # the temporary file is deleted next; a failing flush changes nothing
        self._tmp.unlink(missing_ok=True)
        self._tmp = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_frames(path: str | os.PathLike[str], frames: list[np.ndarray] | Iterator[np.ndarray], fps: float,
                 *, lossless: bool = False, times: list[float] | None = None) -> int:
    """Write all ``frames`` to ``path`` atomically (at ``times`` seconds, else 1/fps apart); returns the number."""
    with VideoWriter(path, fps, lossless=lossless) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, None if times is None else times[i])
    return writer.frame_count


class PacedFrames:
    """A video file (or image folder) played as a fake camera: each frame at its presentation time, in real time.

    Yields ``(frame, capture_time)`` where ``capture_time`` is the ``clock()`` time the frame is due (what a camera
    would stamp). Like a camera, it never queues: a consumer that falls more than a frame behind gets the frame now
    due and the missed ones are dropped (``dropped`` counts them). ``loop=True`` repeats the clip forever.
    Iterate with ``for`` (sleeps) or ``async for`` (awaits, for the live call's event loop).
    """

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = VideoReader(path)
        self.fps = self.reader.fps
        self.loop = loop
        self.clock = clock
        self.dropped = 0

    def _schedule(self) -> Iterator[tuple[np.ndarray, float, float]]:
        """(frame, due time, seconds to wait) for each frame to deliver; drops frames whose slot has passed."""
        start: float | None = None
        while True:
            t = 0.0
            for frame, t in self.reader.timed():
                start = self.clock() if start is None else start  # the clip starts when its first frame is ready
                due = start + t
                wait = due - self.clock()
                if wait <= -1.0 / self.fps:
                    self.dropped += 1
                    continue
                yield frame, due, wait
            if not self.loop:
                return
            start = None if start is None else start + t + 1.0 / self.fps  # one frame after this pass's last

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        for frame, due, wait in self._schedule():
            if wait > 0:
                time.sleep(wait)
            yield frame, due

    async def __aiter__(self) -> AsyncIterator[tuple[np.ndarray, float]]:
        for frame, due, wait in self._schedule():
            await asyncio.sleep(max(wait, 0.0))
            yield frame, due

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> PacedFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
