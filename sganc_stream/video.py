"""Video I/O shared by the pipeline, the benchmark and the live call.

Frames are always uint8 RGB arrays of shape (H, W, 3). Reading goes through PyAV (any container/codec FFmpeg
decodes) or a folder of images; writing is H.264 by default or bit-exact lossless (libx264rgb, qp 0) so decoded
frames can be compared exactly. Writes are atomic: the target name only ever holds a complete file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from sganc_stream.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOSSLESS_CODEC = "libx264rgb"  # RGB H.264 at qp 0: bit-exact, and still an ordinary .mp4/.mkv
DEFAULT_CRF = 18


def _one_line(error: BaseException) -> str:
    """Error text without newlines, so an InputError stays one line."""
    return " ".join(str(error).split()) or type(error).__name__


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


class VideoReader:
    """Decoded frames of a video file or an image folder (sorted .png/.jpg/.jpeg).

    ``fps`` is the stream's average rate (``image_fps`` for folders, which carry none), ``frame_count`` the number
    of frames the container declares (None when it declares none), ``size`` is (width, height). The first frame is
    decoded on open, so an unreadable, non-video or empty input fails here with a one-line InputError. Each
    ``iter()`` starts again from the first frame, which is what looping a clip needs. A container can declare more
frames than it holds (shared mead_eamm/sad.mp4 declares 157 and decodes 110): count decoded frames where it matters.
    """

    def __init__(self, path: str | os.PathLike[str], *, image_fps: float = 25.0) -> None:
        self.path = Path(path)
        self._container: av.container.InputContainer | None = None
        self._images: list[Path] = []
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
            first = next(self._decode(), None)
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

    def _decode(self) -> Iterator[np.ndarray]:
        assert self._container is not None
        for frame in self._container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._images:
            return (_read_image(p) for p in self._images)
        if self._container is None:
            raise InputError(f"video {self.path} is closed")
        return self._frames_from_start()

    def _frames_from_start(self) -> Iterator[np.ndarray]:
        assert self._container is not None
        try:
            self._container.seek(0)
            yield from self._decode()
        except av.FFmpegError as error:
            raise InputError(f"cannot decode video {self.path}: {_one_line(error)}") from error

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
    """Writes uint8 RGB frames to a video file, atomically.

    Default: H.264 (libx264, yuv420p, crf 18) — odd widths/heights are padded to even by repeating the last
    column/row, as 4:2:0 requires. ``lossless=True``: libx264rgb at qp 0, which decodes back bit-exactly (no
    colour conversion, odd sizes kept). The container follows the suffix (.mp4, .mkv, ...). Frames go to a hidden
    temporary file in the target's folder, renamed onto the target by a successful ``close()``; an error (including
    leaving a ``with`` block by an exception) deletes the temporary file and leaves the target untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        *,
        lossless: bool = False,
        codec: str = "libx264",
        options: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not fps or fps <= 0:
            raise InputError(f"frame rate must be positive, got {fps}")
        self.fps = float(fps)
        self.codec = LOSSLESS_CODEC if lossless else codec
        self.options = {"qp": "0"} if lossless else {"crf": str(DEFAULT_CRF)} if self.codec == "libx264" else {}
        self.options.update(options or {})
        try:
            formats = av.codec.Codec(self.codec, "w").video_formats or ()
        except (av.FFmpegError, ValueError) as error:  # UnknownCodecError is a ValueError
            raise InputError(f"video encoder {self.codec} is not available in this PyAV build") from error
        self._rgb = "rgb24" in [f.name for f in formats]  # else yuv420p, which needs even sides
        self.frame_count = 0
        self._stream: av.video.stream.VideoStream | None = None
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
            self._container = av.open(str(self._tmp), "w")
        except (av.FFmpegError, OSError, ValueError) as error:
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write video {self.path}: {_one_line(error)}") from error

    def _add_stream(self, width: int, height: int) -> None:
        rate = Fraction(self.fps).limit_denominator(100_000)
        stream = self._container.add_stream(self.codec, rate=rate, options=self.options)
        stream.pix_fmt = "rgb24" if self._rgb else "yuv420p"
        stream.width = width if self._rgb else width + width % 2
        stream.height = height if self._rgb else height + height % 2
        stream.time_base = 1 / rate
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        """Encode one frame; all frames must have the first frame's size."""
        frame = check_frame(frame)
        height, width = frame.shape[:2]
        if self._stream is None:
            self._frame_size = (width, height)
            self._add_stream(width, height)
        elif (width, height) != self._frame_size:
            self.abort()
            raise InputError(f"frame size {width}x{height} differs from the first frame's "
                             f"{self._frame_size[0]}x{self._frame_size[1]} in {self.path}")
        assert self._stream is not None
        pad_w, pad_h = self._stream.width - width, self._stream.height - height
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.frame_count
        self._mux(self._stream.encode(video_frame))
        self.frame_count += 1

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
        self._mux(self._stream.encode(None))
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
                 *, lossless: bool = False) -> int:
    """Write all ``frames`` to ``path`` atomically; returns the number written."""
    with VideoWriter(path, fps, lossless=lossless) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frame_count


class PacedFrames:
    """A video file (or image folder) played as a fake camera: frames at the clip's fps, in real time.

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
        start = self.clock()
        index = 0
        while True:
            for frame in self.reader:
                due = start + index / self.fps
                index += 1
                wait = due - self.clock()
                if wait <= -1.0 / self.fps:
                    self.dropped += 1
                    continue
                yield frame, due, wait
            if not self.loop:
                return

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
