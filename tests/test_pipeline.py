"""FrameEncoder / FrameDecoder and file transcoding on a real clip with a tiny random-weight model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from face_data import STEADY_CLIP, clip_frames, two_person_scene
from pipeline_data import tiny_bundle, variant_bundle
from sganc_stream.bitstream.container import read_container
from sganc_stream.bitstream.packet import PacketType, pack
from sganc_stream.errors import CheckpointError, InputError, InputWarning, ModelMismatchError
from sganc_stream.face.tracker import FaceFlags
from sganc_stream.latent.codec import StreamParams
from sganc_stream.decoding import decode_file
from sganc_stream.pipeline import (NO_FACE_PIXEL, FaceModel, FrameDecoder, FrameEncoder, TranscodeOptions,
                                   load_face_model, nominal_times, quality_side, resolve_device, transcode_file,
                                   transcode_frames)
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
    assert all(e.has_face for e in encoded)
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


def test_frames_without_a_face_become_no_face_packets(model: FaceModel, frames: tuple[np.ndarray, ...]) -> None:
    """Before the first face and while it is gone: a no-face packet per frame, the held crop is never coded."""
    enc, dec = FrameEncoder(model, PARAMS), FrameDecoder(model, PARAMS)
    black = np.zeros_like(frames[0])
    out = enc.encode_batch([black, black, frames[0], frames[1], black, black]) + [enc.encode(frames[2])]
    types = [e.packet.type for e in out]
    assert types == [PacketType.NO_FACE] * 2 + [PacketType.INTRA, PacketType.INTER] + [PacketType.NO_FACE] * 2 + [
        PacketType.INTER_RESIDUAL]  # the same person back: no new intra frame, the state carried over the gap
    assert [e.packet.frame for e in out] == list(range(7))  # frame k of the input is packet k
    assert [e.packet.seq for e in out] == [0, 0, 0, 1, 2, 2, 2]  # no-face packets name the next face packet's number
    assert [e.packet.timestamp_ms for e in out] == [40 * k for k in range(7)]
    assert all(e.crop is None and e.wplus is None and e.flags == FaceFlags.NO_FACE for e in out if not e.has_face)
    assert all(len(pack(e.packet, 25.0)) <= 8 for e in out if not e.has_face)  # framing only: the rate drops
    images = dec.decode_batch([e.packet for e in out])
    assert images.shape == (7, model.size, model.size, 3)
    assert all((images[k] == NO_FACE_PIXEL).all() for k in (0, 1, 4, 5))  # nothing invented, no ghost face
    faces = [out[k].recon_wplus for k in (2, 3, 6)]
    assert np.array_equal(images[[2, 3, 6]], model.render(np.stack(faces)))


def test_another_person_is_coded_as_a_new_face_intra_frame(model: FaceModel) -> None:
    """speaker_leaves_bystander_stays: each change of the coded person is a new-face intra frame in the stream."""
    main = [True] * 2 + [False] * 5 + [False] * 2 + [True] * 6
    bystander = [True] * 7 + [False] * 2 + [False] * 6
    enc = FrameEncoder(model, StreamParams("closed", 0, 1, 0))
    out = [enc.encode(f) for f in two_person_scene(main, bystander)]
    types = [e.packet.type for e in out]
    assert types[:2] == [PacketType.INTRA, PacketType.INTER]
    assert types[2] == PacketType.NEW_FACE  # the speaker left, the bystander is coded: said in the stream
    assert types[7:9] == [PacketType.NO_FACE] * 2
    assert types[9] == PacketType.NEW_FACE  # nobody, then the speaker again: a change from the bystander
    assert types.count(PacketType.NEW_FACE) == 2 and PacketType.INTRA not in types[3:]
    dec = FrameDecoder(model, StreamParams("closed", 0, 1, 0))
    for e in out:
        if e.has_face:
            assert np.array_equal(dec.latents(e.packet), e.recon_wplus)


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
    clip = [black, black, *frames[:3], black, *frames[3:]]  # a lead-in without a face, and a faceless frame later
    out = tmp_path / "clip.sgnc"
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "recon.mkv", aligned=tmp_path / "aligned.mkv",
                               paste_back=tmp_path / "pasted.mkv", lossless=True, batch=2, progress=False)
    report = transcode_frames(model, nominal_times(clip, 25.0), 25.0, out, options)
    assert report["frames"] == len(clip) and report["no_face_frames"] == 3 and report["first_face_frame"] == 2
    assert report["identity_changes"] == 0
    assert [f["type"] for f in report["per_frame"]].count("no_face") == 3
    assert report["bytes"] == out.stat().st_size == read_container(out).total_bytes
    assert report["quality"] is None and report["speed"]["decode_fps"] > 0
    info = decode_file(model, out, tmp_path / "decoded.mkv", lossless=True, batch=2, progress=False)
    assert info["frames"] == len(clip) and info["no_face_frames"] == 3  # lines up with the source, lead-in included
    recon, decoded = np.stack(read_frames(tmp_path / "recon.mkv")), np.stack(read_frames(tmp_path / "decoded.mkv"))
    assert recon.shape == (len(clip), model.size, model.size, 3)
    assert np.array_equal(recon, decoded)
    assert all((decoded[k] == NO_FACE_PIXEL).all() for k in (0, 1, 5))
    assert len(read_frames(tmp_path / "aligned.mkv")) == len(clip)
    pasted = read_frames(tmp_path / "pasted.mkv")
    assert all(np.array_equal(pasted[k], clip[k]) for k in (0, 1, 5))  # no face: the source frame, nothing pasted
    assert not np.array_equal(pasted[2], clip[2])


def test_no_face_in_the_searched_frames_says_how_many(model: FaceModel, frames: tuple[np.ndarray, ...],
                                                      tmp_path: Path) -> None:
    """face_appears_after_60_frames with --max-frames 30: the error says what was searched."""
    clip = [np.zeros_like(frames[0])] * 4 + list(frames[:2])
    options = TranscodeOptions(params=PARAMS, max_frames=3, progress=False)
    with pytest.raises(InputError, match=r"no face found in late.mp4: searched 3 of 6 frames \(0\.12 s\); the search "
                                         r"stopped at the frame limit \(3\)"):
        transcode_frames(model, nominal_times(clip, 25.0), 25.0, tmp_path / "x.sgnc", options, name="late.mp4",
                         total=len(clip))
    assert os.listdir(tmp_path) == []
    report = transcode_frames(model, nominal_times(clip, 25.0), 25.0, tmp_path / "x.sgnc",
                              TranscodeOptions(params=PARAMS, progress=False))
    assert report["first_face_frame"] == 4 and report["frames"] == 6  # the whole clip: the lead-in is recorded


def test_no_face_anywhere_leaves_no_output(model: FaceModel, tmp_path: Path) -> None:
    black = [np.zeros((96, 96, 3), np.uint8)] * 3
    options = TranscodeOptions(params=PARAMS, recon=tmp_path / "recon.mp4", report=tmp_path / "r.json", progress=False)
    with pytest.raises(InputError, match=r"no face found in blank: searched 3 frames \(0\.12 s\)$"):
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


def test_quality_is_measured_at_the_source_face_size() -> None:
    """Never on upscaled pixels: the face's own side, capped by the aligned crop and G's output, floor 64."""
    assert quality_side(118.4, 256, 1024) == 118  # a small MEAD face: pSp crops enlarged 2.2x are scored at 118
    assert quality_side(700.0, 256, 1024) == 256  # a large face: the aligned crop is the finest reference
    assert quality_side(118.0, 256, 64) == 64  # a 64 px generator's output is not enlarged either
    assert quality_side(20.0, 256, 1024) == 64  # below 64 px MS-SSIM and the face detector do not work
    assert quality_side(20.0, 48, 1024) == 48


def test_rotated_clip_codes_as_its_upright_twin(model: FaceModel, frames: tuple[np.ndarray, ...],
                                                tmp_path: Path) -> None:
    """A phone clip stored sideways (display matrix: turn 90°) gives the very stream of the upright clip."""
    upright, sideways = tmp_path / "upright.mp4", tmp_path / "sideways.mp4"
    write_stored(upright, list(frames[:3]))
    write_stored(sideways, [stored_for_display(f, "turn_cw") for f in frames[:3]], display_matrix("turn_cw"))
    options = TranscodeOptions(params=PARAMS, progress=False)
    transcode_file(model, upright, tmp_path / "a.sgnc", options)
    report = transcode_file(model, sideways, tmp_path / "b.sgnc", options)
    assert report["frames"] == 3 and report["no_face_frames"] == 0
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


@pytest.mark.parametrize("field,name", [("recon", "r.mpg"), ("aligned", "a.flv"), ("aligned_vs_decoded", "s")])
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


def test_video_decode_refuses_a_decimated_stream_in_one_error(tiny_codec, tmp_path):
    """A decimated stream (bitstream v5) decodes to latents only: the video decoder says so before any work and
    writes nothing."""
    from sganc_stream.latent.sequence import encode_sequence
    from sganc_stream.latent.synthetic import synthetic_latents

    from conftest import TINY_ROWS, TINY_WIDTH

    data = encode_sequence(tiny_codec, synthetic_latents("walk", 6, TINY_ROWS, TINY_WIDTH, seed=2),
                           StreamParams("open", 2, 1, decimation=2)).data
    (tmp_path / "d.sgnc").write_bytes(data)
    with pytest.raises(InputError, match="decimated stream.*sganc-stream latents decode"):
        decode_file(None, tmp_path / "d.sgnc", tmp_path / "out.mp4", progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "out.mp4").exists()
