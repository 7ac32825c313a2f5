"""FrameEncoder / FrameDecoder and file transcoding on a real clip with a tiny random-weight model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from face_data import STEADY_CLIP, clip_frames
from pipeline_data import tiny_bundle, variant_bundle
from sganc_stream.bitstream.container import read_container
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.errors import CheckpointError, InputError, InputWarning, ModelMismatchError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import (FaceModel, FrameDecoder, FrameEncoder, TranscodeOptions, decode_file,
                                   load_face_model, nominal_times, resolve_device, transcode_file, transcode_frames)
from sganc_stream.video import VideoReader, read_frames
from video_data import display_matrix, stored_for_display, truncated_copy, write_stored

PARAMS = StreamParams("open", 2, 1, 0)


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(tiny_bundle())


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, ...]:
    return clip_frames(STEADY_CLIP, 5)


def test_decoder_reproduces_encoder_reconstruction(model: FaceModel, frames: tuple[np.ndarray, ...]) -> None:
    enc, dec = FrameEncoder(model, PARAMS, fps=25.0), FrameDecoder(model, PARAMS)
    encoded = enc.encode_batch(list(frames[:2])) + [enc.encode(f) for f in frames[2:4]]
    assert all(e is not None for e in encoded)
    assert [e.packet.frame for e in encoded] == [0, 1, 2, 3]
    assert [e.packet.type for e in encoded] == [PacketType.INTRA, PacketType.INTER, PacketType.INTER_RESIDUAL,
                                                 PacketType.INTER]
    assert [e.packet.timestamp_ms for e in encoded] == [0, 40, 80, 120]
    assert encoded[0].crop.shape == (model.size, model.size, 3) and encoded[0].quad is not None
    images = dec.decode_batch([e.packet for e in encoded[:2]])
    assert images.dtype == np.uint8 and images.shape == (2, model.size, model.size, 3)
    assert np.array_equal(images, model.render(np.stack([e.recon_wplus for e in encoded[:2]])))
    for e in encoded[2:]:  # the integer state makes the latents exact, whatever the batching
        assert np.array_equal(dec.latents(e.packet), e.recon_wplus)


def test_keyframe_request_and_capture_timestamps(model: FaceModel, frames: tuple[np.ndarray, ...]) -> None:
    enc = FrameEncoder(model, StreamParams("closed", 0, 1, 0), fps=25.0)
    first = enc.encode(frames[0], timestamp=10.0)
    second = enc.encode(frames[1], timestamp=10.05)
    enc.request_keyframe()
    third = enc.encode(frames[2], timestamp=10.08)
    assert [p.packet.type for p in (first, second, third)] == [PacketType.INTRA, PacketType.INTER, PacketType.INTRA]
    assert [p.packet.timestamp_ms for p in (first, second, third)] == [0, 50, 80]


def test_frames_before_the_first_face_are_not_coded(model: FaceModel, frames: tuple[np.ndarray, ...]) -> None:
    enc = FrameEncoder(model, PARAMS)
    black = np.zeros_like(frames[0])
    out = enc.encode_batch([black, black, frames[0]])
    assert out[0] is None and out[1] is None
    assert out[2] is not None and out[2].packet.frame == 0 and out[2].packet.type == PacketType.INTRA
    held = enc.encode(black)  # after a face: the quad is held, the frame is coded and flagged
    assert held is not None and held.packet.frame == 1 and "NO_FACE" in repr(held.flags)


def test_decoder_refuses_another_model(model: FaceModel, tmp_path: Path) -> None:
    other = load_face_model(variant_bundle(tiny_bundle(), tmp_path / "other.safetensors"))
    header = FrameEncoder(model, PARAMS).header(1)
    with pytest.raises(ModelMismatchError):
        FrameDecoder.for_header(other, header)


def test_decode_only_model_cannot_encode(model: FaceModel) -> None:
    no_encoder = FaceModel(model.generator, None, model.codec, model.config, model.model_id, "x", model.device)
    with pytest.raises(CheckpointError, match="no encoder"):
        FrameEncoder(no_encoder, PARAMS)


def test_transcode_then_decode_file_gives_equal_arrays(model: FaceModel, frames: tuple[np.ndarray, ...],
                                                      tmp_path: Path) -> None:
    black = np.zeros_like(frames[0])
    clip = [black, *frames]  # one leading faceless frame: skipped
    out = tmp_path / "clip.sgnc"
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "recon.mkv", aligned=tmp_path / "aligned.mkv",
                               lossless=True, batch=2, progress=False)
    report = transcode_frames(model, nominal_times(clip, 25.0), 25.0, out, options)
    assert report["frames"] == len(frames) and report["skipped_frames"] == 1
    assert report["bytes"] == out.stat().st_size == read_container(out).total_bytes
    assert report["quality"] is None and report["speed"]["decode_fps"] > 0
    info = decode_file(model, out, tmp_path / "decoded.mkv", lossless=True, batch=2, progress=False)
    assert info["frames"] == len(frames)
    recon, decoded = np.stack(read_frames(tmp_path / "recon.mkv")), np.stack(read_frames(tmp_path / "decoded.mkv"))
    assert recon.shape == (len(frames), model.size, model.size, 3)
    assert np.array_equal(recon, decoded)
    assert len(read_frames(tmp_path / "aligned.mkv")) == len(frames)


def test_no_face_anywhere_leaves_no_output(model: FaceModel, tmp_path: Path) -> None:
    black = [np.zeros((96, 96, 3), np.uint8)] * 3
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "recon.mp4", report=tmp_path / "r.json", progress=False)
    with pytest.raises(InputError, match="no face found in blank"):
        transcode_frames(model, nominal_times(black, 25.0), 25.0, tmp_path / "x.sgnc", options, name="blank")
    assert os.listdir(tmp_path) == []


def test_disk_full_leaves_no_output(model: FaceModel, frames: tuple[np.ndarray, ...], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    options = TranscodeOptions(params=PARAMS, aligned=tmp_path / "aligned.mp4", progress=False)
    with pytest.raises(OSError, match="No space"):
        transcode_frames(model, nominal_times(frames[:2], 25.0), 25.0, tmp_path / "x.sgnc", options)
    assert os.listdir(tmp_path) == []


def test_outputs_are_checked_before_any_work(model: FaceModel, tmp_path: Path) -> None:
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "missing" / "r.mp4", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        transcode_frames(model, iter(()), 25.0, tmp_path / "x.sgnc", options)
    with pytest.raises(InputError, match="is a directory"):
        transcode_frames(model, iter(()), 25.0, tmp_path, TranscodeOptions(params=PARAMS, progress=False))


def test_pre_aligned_frames_skip_alignment(model: FaceModel, tmp_path: Path) -> None:
    frames = list(model.render(np.zeros((2, model.rows, 512), np.float32)))
    options = TranscodeOptions(params=PARAMS, align=False, progress=False)
    report = transcode_frames(model, nominal_times(frames, 30.0), 30.0, tmp_path / "g.sgnc", options)
    assert report["frames"] == 2 and report["fps"] == 30.0 and report["per_frame"][0]["face"] == []


def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unsupported device"):
        resolve_device("meta")
    with pytest.raises(InputError, match="unsupported device"):
        resolve_device("gpu0")


def test_rotated_clip_codes_as_its_upright_twin(model: FaceModel, frames: tuple[np.ndarray, ...],
                                                tmp_path: Path) -> None:
    """A phone clip stored sideways (display matrix: turn 90°) gives the very stream of the upright clip."""
    upright, sideways = tmp_path / "upright.mp4", tmp_path / "sideways.mp4"
    write_stored(upright, list(frames[:3]))
    write_stored(sideways, [stored_for_display(f, "turn_cw") for f in frames[:3]], display_matrix("turn_cw"))
    options = TranscodeOptions(params=PARAMS, progress=False)
    transcode_file(model, upright, tmp_path / "a.sgnc", options)
    report = transcode_file(model, sideways, tmp_path / "b.sgnc", options)
    assert report["frames"] == 3 and report["skipped_frames"] == 0
    assert (tmp_path / "a.sgnc").read_bytes() == (tmp_path / "b.sgnc").read_bytes()  # same machine, same threads


def test_variable_frame_rate_is_kept_in_stream_and_videos(model: FaceModel, frames: tuple[np.ndarray, ...],
                                                          tmp_path: Path) -> None:
    times_ms = [0, 40, 160, 280, 320]  # 40 ms apart, then 120 ms: the shared case in miniature
    clip = tmp_path / "vfr.mp4"
    write_stored(clip, list(frames[:5]), times_ms=times_ms)
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "recon.mkv", aligned=tmp_path / "aligned.webm",
                               paste_back=tmp_path / "pasted.mp4", lossless=True, progress=False)
    transcode_file(model, clip, tmp_path / "vfr.sgnc", options)
    assert [p.timestamp_ms for p in read_container(tmp_path / "vfr.sgnc").packets] == times_ms
    decode_file(model, tmp_path / "vfr.sgnc", tmp_path / "decoded.mp4", lossless=True, progress=False)
    for name in ("recon.mkv", "aligned.webm", "pasted.mp4", "decoded.mp4"):
        with VideoReader(tmp_path / name) as video:
            assert [round(t * 1000) for _, t in video.timed()] == times_ms, name


def test_truncated_input_warns_and_the_report_says_how_much_was_read(model: FaceModel,
                                                                     frames: tuple[np.ndarray, ...],
                                                                     tmp_path: Path) -> None:
    full, cut = tmp_path / "full.mp4", tmp_path / "cut.mp4"
    write_stored(full, list(frames[:5]) * 4, options={"movflags": "faststart"})
    truncated_copy(full, cut, 0.6)
    options = TranscodeOptions(params=PARAMS, progress=False)
    with pytest.warns(InputWarning, match="cut.mp4 ended early: .* of the 20 frames"):
        report = transcode_file(model, cut, tmp_path / "x.sgnc", options)
    assert 0 < report["input_frames"]["read"] < 20 == report["input_frames"]["declared"]
    assert report["frames"] == report["input_frames"]["read"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = transcode_file(model, full, tmp_path / "y.sgnc", options)
    assert report["input_frames"] == {"read": 20, "declared": 20}


@pytest.mark.parametrize("field,name", [("recon", "r.avi"), ("aligned", "a.flv"), ("side_by_side", "s")])
def test_unsupported_video_outputs_are_refused_before_any_work(model: FaceModel, tmp_path: Path, field: str,
                                                              name: str) -> None:
    def never() -> Iterator[tuple[np.ndarray, float]]:
        raise AssertionError("a frame was read")
        yield

    options = TranscodeOptions(params=PARAMS, progress=False, **{field: tmp_path / name})
    with pytest.raises(InputError, match="unknown suffix"):
        transcode_frames(model, never(), 25.0, tmp_path / "x.sgnc", options)
    with pytest.raises(InputError, match="256 colours"):
        transcode_frames(model, never(), 25.0, tmp_path / "x.sgnc",
                         TranscodeOptions(params=PARAMS, recon=tmp_path / "r.gif", lossless=True, progress=False))
    assert os.listdir(tmp_path) == []
