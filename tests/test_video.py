"""Video I/O: metadata and frames of real clips, bit-exact lossless round trips, one-line errors, atomic writes."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from sganc_stream.errors import InputError, InputWarning
from sganc_stream.video import PacedFrames, VideoReader, VideoWriter, read_frames, write_frames
from video_data import MATRICES, display_matrix, stored_for_display, truncated_copy, write_stored

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "data" / "clips"
MEAD_CLIP = "dreamtalk_mead/M030_front_angry_level3_001.mp4"  # 256x256, 25 fps, 98 frames
FPS30_CLIP = "styletalk/style_clips/furious_talk2_clip1.mp4"  # 256x256, 30 fps, 60 frames


def manifest() -> dict[str, dict[str, str]]:
    if not (CLIPS / "MANIFEST.csv").is_file():
        pytest.skip(f"shared clips not found at {CLIPS}")
    with open(CLIPS / "MANIFEST.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def random_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("name", [MEAD_CLIP, FPS30_CLIP])
def test_reads_clip_metadata_and_every_frame(name: str) -> None:
    row = manifest()[name]
    num, den = map(int, row["fps"].split("/"))
    with VideoReader(CLIPS / name) as reader:
        assert reader.fps == pytest.approx(num / den)
        assert reader.frame_count == int(row["frames"])
        assert reader.size == (int(row["width"]), int(row["height"]))
        frames = list(reader)
        again = list(reader)  # a second pass restarts at the first frame (looping needs this)
    assert len(frames) == len(again) == int(row["frames"])
    assert frames[0].shape == (int(row["height"]), int(row["width"]), 3) and frames[0].dtype == np.uint8
    assert np.array_equal(frames[0], again[0]) and np.array_equal(frames[-1], again[-1])


def test_reads_full_frame_clip_with_fractional_rate() -> None:
    row = manifest()["mead_eamm/M030_sad_3_001.mp4"]  # 1920x1080 at 1000000/33333 fps
    with VideoReader(CLIPS / row["file"]) as reader:
        assert reader.fps == pytest.approx(1000000 / 33333)
        assert (reader.size, reader.frame_count) == ((1920, 1080), int(row["frames"]))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_lossless_round_trip_is_bit_exact(tmp_path: Path, suffix: str) -> None:
    frames = random_frames(6, 37, 51)  # noise and odd sizes: the hardest case for a lossy path
    path = tmp_path / f"clip{suffix}"
    assert write_frames(path, frames, 25, lossless=True) == 6
    with VideoReader(path) as reader:
        assert reader.size == (51, 37) and reader.fps == 25.0
        back = list(reader)
    assert len(back) == 6 and all(np.array_equal(a, b) for a, b in zip(frames, back))


def test_lossless_round_trip_of_real_frames(tmp_path: Path) -> None:
    manifest()
    frames = read_frames(CLIPS / MEAD_CLIP, limit=10)
    write_frames(tmp_path / "real.mp4", frames, 25, lossless=True)
    assert all(np.array_equal(a, b) for a, b in zip(frames, read_frames(tmp_path / "real.mp4"), strict=True))


def test_h264_default_keeps_rate_and_count_and_pads_odd_sizes(tmp_path: Path) -> None:
    frames = [np.full((45, 63, 3), (40 + 10 * i, 120, 200), np.uint8) for i in range(8)]
    path = tmp_path / "lossy.mp4"
    write_frames(path, frames, 29.97)
    with VideoReader(path) as reader:
        assert reader.fps == pytest.approx(29.97) and reader.frame_count == 8
        assert reader.size == (64, 46)  # 4:2:0 needs even sides: last column/row repeated
        back = list(reader)
    assert len(back) == 8
    assert np.abs(back[3][:45, :63].astype(int) - frames[3]).max() <= 3
    assert np.array_equal(back[3][:, 63], back[3][:, 62])


def test_reads_image_folder_sorted(tmp_path: Path) -> None:
    frames = random_frames(3, 20, 30)
    for i, frame in reversed(list(enumerate(frames))):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    with VideoReader(tmp_path, image_fps=30) as reader:
        assert (reader.fps, reader.frame_count, reader.size) == (30.0, 3, (30, 20))
        assert all(np.array_equal(a, b) for a, b in zip(frames, reader, strict=True))


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50, None, "empty-folder"])
def test_unreadable_input_is_one_line_input_error(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "input.mp4"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "empty-folder":
        path.mkdir()
    with pytest.raises(InputError) as caught:
        VideoReader(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


def test_truncated_clip_is_one_line_input_error(tmp_path: Path) -> None:
    manifest()
    path = tmp_path / "truncated.mp4"
    path.write_bytes((CLIPS / MEAD_CLIP).read_bytes()[:30000])
    with pytest.raises(InputError, match="cannot read video .*truncated.mp4"):
        VideoReader(path)


def test_audio_only_file_is_rejected(tmp_path: Path) -> None:
    import av

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(path)


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 25) as writer:
            writer.write(random_frames(1, 32, 32)[0])
            raise RuntimeError("pipeline failed mid-clip")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    write_frames(target, random_frames(2, 32, 32), 25, lossless=True)
    before = target.read_bytes()
    with pytest.raises(InputError, match="differs from the first frame"):
        with VideoWriter(target, 25) as writer:
            writer.write(random_frames(1, 32, 32)[0])
            writer.write(random_frames(1, 16, 16)[0])
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


def test_unwritable_destination_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 25)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "file" / "out.mp4", 25)
    with pytest.raises(InputError, match="uint8 RGB"):
        with VideoWriter(tmp_path / "out.mp4", 25) as writer:
            writer.write(np.zeros((8, 8, 3), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_disk_full_leaves_nothing(tmp_path: Path) -> None:
    """A file-size limit makes writes fail with EFBIG, as a full disk fails them with ENOSPC."""
    script = f"""
import resource, signal, numpy as np
from sganc_stream.errors import InputError, InputWarning
from sganc_stream.video import VideoWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
rng = np.random.default_rng(0)
try:
    with VideoWriter({str(tmp_path / 'out.mp4')!r}, 25, lossless=True) as writer:
        for _ in range(20):
            writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
except InputError as error:
    print("InputError:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("InputError: cannot write video") and result.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_paced_frames_loop_in_real_time(tmp_path: Path) -> None:
    frames = random_frames(4, 16, 16)
    write_frames(tmp_path / "clip.mkv", frames, 50, lossless=True)
    with PacedFrames(tmp_path / "clip.mkv", loop=True) as camera:
        start = time.monotonic()
        got = [item for _, item in zip(range(10), camera)]
        elapsed = time.monotonic() - start
    slots = [round((stamp - got[0][1]) * 50) for _, stamp in got]  # frame slots at 50 fps; a busy machine may drop
    assert slots == sorted(set(slots)) and slots[-1] == 9 + camera.dropped
    assert all(np.array_equal(frame, frames[slot % 4]) for (frame, _), slot in zip(got, slots))  # looped
    assert elapsed >= slots[-1] * 0.02 - 0.002  # never delivered ahead of time


def test_paced_frames_drop_for_a_slow_consumer_and_support_async(tmp_path: Path) -> None:
    write_frames(tmp_path / "clip.mkv", random_frames(5, 16, 16), 100, lossless=True)

    async def consume() -> tuple[list[float], int]:
        camera = PacedFrames(tmp_path / "clip.mkv", loop=False)
        stamps = []
        async for _, stamp in camera:
            stamps.append(stamp)
            await asyncio.sleep(0.025)  # 2.5 frame intervals per frame
        camera.close()
        return stamps, camera.dropped

    stamps, dropped = asyncio.run(consume())
    assert dropped > 0 and len(stamps) + dropped == 5
    assert all(step >= 0.02 - 1e-9 for step in np.diff(stamps))  # skipped slots, never queued stale frames


# ----------------------------------------------------------------------------------------------------
# Field cases (../shared/cases): display matrix, variable frame rate, output suffixes, truncated uploads


def _pattern(height: int = 24, width: int = 40) -> np.ndarray:
    """An image with no symmetry: every turn and mirror of it differs."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.arange(width)[None] * 6
    frame[..., 1] = np.arange(height)[:, None] * 10
    frame[:4, :6, 2] = 255
    return frame


def _ffmpeg_autorotate(stored: np.ndarray, m: list[int]) -> np.ndarray:
    """What FFmpeg's command line shows for a display matrix (fftools/ffmpeg_filter.c: get_rotation, then
    transpose=clock/cclock/cclock_flip/clock_flip, hflip, vflip), written as that table, not as matrix algebra."""
    a, b = m[0] / 65536, m[1] / 65536
    theta = -round(-np.degrees(np.arctan2(b, a)))  # av_display_rotation_get, then get_rotation's sign and rounding
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    clock = lambda x: np.rot90(x, -1)  # noqa: E731  (transpose=clock: 90° clockwise)
    cclock = lambda x: np.rot90(x, 1)  # noqa: E731
    if abs(theta - 90) < 1:
        return stored.transpose(1, 0, 2) if m[3] > 0 else clock(stored)  # cclock_flip is the plain transpose
    if abs(theta - 180) < 1:
        out = stored[:, ::-1] if m[0] < 0 else stored
        return out[::-1] if m[4] < 0 else out
    if abs(theta - 270) < 1:
        return clock(stored)[::-1] if m[3] < 0 else cclock(stored)  # clock_flip: clockwise, then vertical flip
    return stored[::-1] if m[4] < 0 else stored


@pytest.mark.parametrize("name", MATRICES)
def test_display_matrix_is_applied_as_ffmpeg_shows_it(tmp_path: Path, name: str) -> None:
    matrix = display_matrix(name)
    stored = [_pattern(), _pattern()[::-1].copy()]
    write_stored(tmp_path / "phone.mp4", stored, matrix)
    with VideoReader(tmp_path / "phone.mp4") as reader:
        shown = list(reader)
        expected = [_ffmpeg_autorotate(f, matrix) for f in stored]
        assert reader.size == (expected[0].shape[1], expected[0].shape[0])
    assert all(np.array_equal(s, e) for s, e in zip(shown, expected, strict=True))
    assert (name == "identity") == np.array_equal(shown[0], stored[0])
    upright = _pattern()
    write_stored(tmp_path / "phone2.mp4", [stored_for_display(upright, name)], matrix)
    assert np.array_equal(read_frames(tmp_path / "phone2.mp4")[0], upright)  # the test helper agrees too


def test_display_matrix_at_an_odd_angle_warns_and_reads_as_stored(tmp_path: Path) -> None:
    c45 = round(65536 * np.sqrt(0.5))
    write_stored(tmp_path / "tilted.mp4", [_pattern()], [c45, c45, 0, -c45, c45, 0, 0, 0, 1 << 30])
    with pytest.warns(InputWarning, match="turns by -45.0°"):
        reader = VideoReader(tmp_path / "tilted.mp4")
    with reader:
        assert np.array_equal(next(iter(reader)), _pattern())


def test_variable_frame_rate_keeps_every_presentation_time(tmp_path: Path) -> None:
    times_ms = [0, 40, 80, 200, 320, 440, 480]  # 40 ms apart, then 120 ms, then 40 ms again
    frames = random_frames(len(times_ms), 16, 24)
    write_stored(tmp_path / "vfr.mp4", frames, None, times_ms)
    with VideoReader(tmp_path / "vfr.mp4") as reader:
        got = list(reader.timed())
    assert [round(t * 1000) for _, t in got] == times_ms
    for suffix in (".mp4", ".mkv", ".webm", ".png", ".gif"):  # and a written video keeps them
        out = tmp_path / f"out{suffix}"
        write_frames(out, [f for f, _ in got], 25, times=[t for _, t in got], lossless=suffix != ".gif")
        with VideoReader(out) as back:
            assert [round(t * 1000) for _, t in back.timed()] == times_ms, suffix


def test_paced_frames_follow_presentation_times(tmp_path: Path) -> None:
    times_ms = [0, 20, 100, 120]
    write_frames(tmp_path / "vfr.mkv", random_frames(4, 16, 16), 25, lossless=True, times=[t / 1000 for t in times_ms])
    with PacedFrames(tmp_path / "vfr.mkv", loop=False) as camera:
        stamps = [due for _, due in camera]
    assert camera.dropped == 0 and [round((s - stamps[0]) * 1000) for s in stamps] == times_ms


@pytest.mark.parametrize("suffix,fmt,codec,exact", [(".mp4", "mov", "h264", True), (".mov", "mov", "h264", True),
                                                    (".m4v", "mov", "h264", True), (".mkv", "matroska", "h264", True),
                                                    (".webm", "matroska", "vp9", True), (".png", "apng", "apng", True),
                                                    (".gif", "gif", "gif", False)])
def test_every_output_suffix_writes_the_format_it_names(tmp_path: Path, suffix: str, fmt: str, codec: str,
                                                        exact: bool) -> None:
    import av

    frames = [_pattern(), _pattern()[::-1].copy(), _pattern()[:, ::-1].copy()]
    path = tmp_path / f"out{suffix}"
    write_frames(path, frames, 25, lossless=exact)
    with av.open(str(path)) as container:
        assert fmt in container.format.name.split(",") and container.streams.video[0].codec_context.name == codec
    back = read_frames(path)
    assert len(back) == 3
    if exact:
        assert all(np.array_equal(a, b) for a, b in zip(frames, back))
    else:  # GIF: a palette of at most 256 colours per frame
        assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back)) < 4
    write_frames(path, frames, 25)  # the lossy default writes the same format
    assert len(read_frames(path)) == 3


@pytest.mark.parametrize("name,lossless,match", [("out.avi", False, "AVI cannot hold presentation times"),
                                                 ("out.flv", False, "unknown suffix"), ("out", False, "(none)"),
                                                 ("out.gif", True, "256 colours")])
def test_unsupported_output_is_refused_before_anything_is_written(tmp_path: Path, name: str, lossless: bool,
                                                                  match: str) -> None:
    with pytest.raises(InputError, match=match) as caught:
        VideoWriter(tmp_path / name, 25, lossless=lossless)
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_truncated_upload_warns_with_decoded_and_declared_counts(tmp_path: Path) -> None:
    full, cut = tmp_path / "full.mp4", tmp_path / "cut.mp4"
    write_stored(full, random_frames(40, 32, 32), options={"movflags": "faststart"})  # index first, as uploads are
    truncated_copy(full, cut)
    with VideoReader(cut) as reader:
        assert reader.frame_count == 40
        with pytest.warns(InputWarning, match=r"cut.mp4 ended early: (\d+) of the 40 frames") as caught:
            n = sum(1 for _ in reader)
        assert 0 < n < 40 and reader.frames_decoded == n and f" {n} of the 40" in str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert sum(1 for _ in reader) == n  # a looping reader warns once
    with VideoReader(full) as reader, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(1 for _ in reader) == 40 == reader.frames_decoded
