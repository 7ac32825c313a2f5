"""Fuzz targets: every parser of outside input in sganc-stream, each fed raw bytes.

A target is a function ``run(data: bytes) -> None`` that hands ``data`` to the project's own boundary code exactly
as the product would (a file on disk, a data-channel message, a signaling text) and carries on as far as the
product would with what parsed. It may raise only :class:`sganc_stream.errors.SgancError` (its subclasses are the
documented errors: the CLI prints them as one line and exits 2, the call reports them as one line). Any other
exception, a run over ``HANG_SECONDS`` or a memory blow-up is a finding.

Each target has seeds: valid inputs made here (with a tiny latent codec built on the fly, so nothing depends on
the shipped models or on ``../shared``) that the mutators start from. ``weight`` is the target's share of a fuzz
run's inputs; slow targets (video, checkpoints) get less.

Targets: ``packet`` (data-channel packets through :class:`PacketReader`), ``payload`` (rANS payloads through the
latent decoder), ``container`` (.sgnc files; ``container_crc`` re-stamps the END checksum so mutations reach the
decoder), ``hello`` (a call's data-channel messages: hello, refusal, keyframe request, packets, in sequence),
``signaling`` (server → client JSON messages and the SDP they carry), ``signaling_join`` (the server's first
message from a client), ``description_line`` (serverless copy-paste lines), ``npy`` (``latents encode`` input),
``bundle`` (safetensors model files through the bundle, latent codec and checkpoint loaders), ``bundle_config``
(the bundle's JSON config with valid tensors), ``checkpoint`` (``.pt`` files through ``load_checkpoint``),
``video`` (video files through :class:`VideoReader`, every frame decoded).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import msgpack
import numpy as np
import torch

from sganc_stream.errors import SgancError

EXPECTED: tuple[type[BaseException], ...] = (SgancError,)
HANG_SECONDS = 1.0
SPLIT = b"\xf1\xf2\xf3\xf4"  # separates the messages of one input (hello, packets...): libFuzzer dictionary word
MAX_VIDEO_FRAMES = 64  # frames decoded per fuzzed video (a real clip may hold thousands; the parser is the point)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    weight: float  # share of a run's inputs (normalised over the targets run)
    max_len: int  # largest input libFuzzer may build


# ----------------------------------------------------------------------------------------------------
# Fixtures: a tiny latent codec (4 rows x 8, two groups, 2 couplings) and files made with it


@cache
def workdir() -> Path:
    """A private scratch folder, in memory where the system has one (files are written once per input)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=f"sganc-fuzz-{os.getpid()}-", dir=base))


def scratch(name: str, data: bytes) -> Path:
    path = workdir() / name
    path.write_bytes(data)
    return path


@cache
def codec_path() -> Path:
    from sganc_stream.entropy.tables import CodingTable, quantize_pmf
    from sganc_stream.latent.flow import RealNVP
    from sganc_stream.latent.model import LatentCodecModel

    torch.manual_seed(0)
    rows, width, groups, steps = 4, 8, [(0, 2), (2, 4)], [0.5, 1.0]
    flows = []
    for _ in groups:
        flow = RealNVP(width, hidden=8, couplings=2)
        with torch.no_grad():
            for p in flow.parameters():
                p.normal_(0, 0.1)
        flows.append(flow.eval())
    x = np.arange(-8, 8)
    pmf = np.exp(-0.5 * (x / 3.0) ** 2)
    tables = {kind: [CodingTable(np.full(rows * width, -8, np.int64), np.tile(quantize_pmf(np.append(pmf, 0.01)), (rows * width, 1)))
                     for _ in steps] for kind in ("intra", "diff")}
    path = workdir() / "codec.safetensors"
    LatentCodecModel(rows, width, groups, steps, flows, tables).save(path)
    return path


@cache
def codec():  # -> LatentCodecModel
    from sganc_stream.latent.model import load_latent_codec

    return load_latent_codec(codec_path())


def latents(frames: int = 8, seed: int = 0) -> np.ndarray:
    from sganc_stream.latent.synthetic import synthetic_latents

    m = codec()
    return synthetic_latents("walk", frames, m.rows, m.width, seed=seed) * 3


@cache
def streams() -> tuple[bytes, ...]:
    """.sgnc files in every mode (open with residuals, closed, intra, keyframes)."""
    from sganc_stream.latent.codec import StreamParams
    from sganc_stream.latent.sequence import encode_sequence

    m = codec()
    params = [StreamParams("open", 3, 0, 0), StreamParams("closed", 0, 1, 4), StreamParams("intra", 0, 1, 0)]
    return tuple(encode_sequence(m, latents(6, i), p, 25.0).data for i, p in enumerate(params))


# ----------------------------------------------------------------------------------------------------
# Packets and payloads


def messages(data: bytes) -> list[bytes]:
    return data.split(SPLIT)[:16]


def run_packet(data: bytes) -> None:
    from sganc_stream.bitstream.packet import PacketReader

    reader = PacketReader(25.0)
    for msg in messages(data):
        try:
            reader.unpack(msg)
        except EXPECTED:
            pass


def seed_packets() -> list[bytes]:
    from sganc_stream.bitstream.container import decode_container
    from sganc_stream.bitstream.packet import Packet, PacketType, pack

    out = []
    for s in streams():
        c = decode_container(s)
        out.append(SPLIT.join(pack(p, c.header.fps) for p in c.packets))
    out.append(pack(Packet(PacketType.KEYFRAME_REQUEST, 300, 0, 0), 25.0))
    out.append(pack(Packet(PacketType.END, 9, 9, 360, b"\0\0\0\0"), 25.0))
    return out


def run_payload(data: bytes) -> None:
    """Payloads of one stream: first byte picks the coding mode, then messages of (type byte, payload)."""
    from sganc_stream.bitstream.packet import PacketType
    from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams

    if not data:
        return
    modes = [StreamParams("open", 3, 0, 0), StreamParams("closed", 0, 1, 0), StreamParams("intra", 0, 1, 0)]
    dec = LatentStreamDecoder(codec(), modes[data[0] % 3])
    for msg in messages(data[1:]):
        if not msg:
            continue
        try:
            dec.decode(PacketType(msg[0] % 5), msg[1:])
        except EXPECTED:
            dec.reset()


def seed_payloads() -> list[bytes]:
    from sganc_stream.bitstream.container import decode_container

    out = []
    for i, s in enumerate(streams()):
        c = decode_container(s)
        out.append(bytes([i]) + SPLIT.join(bytes([int(p.type)]) + p.payload for p in c.packets))
    return out


# ----------------------------------------------------------------------------------------------------
# The .sgnc container


def decode_stream(data: bytes) -> None:
    """What ``latents decode`` does with a file's bytes: parse, check the model, decode every frame."""
    from sganc_stream.latent.sequence import decode_bytes

    decode_bytes(codec(), data, "fuzz.sgnc")


def run_container(data: bytes) -> None:
    try:
        decode_stream(data)
    except EXPECTED:
        pass


def restamp_crc(data: bytes) -> bytes:
    """``data`` with its END packet's checksum recomputed (as someone who altered a file would), when one parses."""
    from sganc_stream.bitstream.container import MAGIC

    if not data.startswith(MAGIC):
        return data
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1), max_bin_len=1 << 20, max_array_len=16,
                                max_map_len=32, strict_map_key=False)
    unpacker.feed(data[5:])
    start = 5
    try:
        for obj in unpacker:
            end = 5 + unpacker.tell()
            if isinstance(obj, list) and len(obj) == 5 and obj[0] == 4 and isinstance(obj[4], bytes):
                obj[4] = struct.pack("<I", zlib.crc32(data[:start]))
                return data[:start] + msgpack.packb(obj, use_bin_type=True) + data[end:]
            start = end
    except Exception:  # noqa: BLE001 - harness side: an unparsable file is fuzzed as it is
        pass
    return data


def run_container_crc(data: bytes) -> None:
    run_container(restamp_crc(data))


def seed_streams() -> list[bytes]:
    return list(streams())


# ----------------------------------------------------------------------------------------------------
# The live call's data channel: hello, refusal, keyframe requests, packets


def run_hello(data: bytes) -> None:
    """A receiving peer (call protocol 2): parse each message, act on a hello as the session does, and decode what
    the receiver delivers as the receive worker does."""
    from sganc_stream.latent.codec import LatentStreamDecoder
    from sganc_stream.latent.sequence import stream_params
    from sganc_stream.rtc.congestion import BandwidthEstimator, Estimate, SendRate
    from sganc_stream.rtc.transport import (FrameMessage, Hello, Late, Nack, Redundancy, RefusedError,
                                            Retransmission, StreamReceiver, check_models, parse_message)

    model = codec()
    receiver, decoder = None, None
    estimator, rate = BandwidthEstimator(), SendRate(20.0)  # congestion control (SPEC §8.8) on whatever arrives
    for i, msg in enumerate(messages(data)):
        now = i * 0.04
        estimator.feedback(now)
        try:
            m = parse_message(msg, None if receiver is None else receiver.reader)
        except RefusedError:
            return
        except EXPECTED:
            if receiver is not None:
                receiver.on_undecodable()
            continue
        if isinstance(m, Hello):
            try:
                check_models(model.model_id, m.model_id)
                if m.stream is not None:
                    receiver = StreamReceiver(m, clock=lambda: 0.0)
                    decoder = LatentStreamDecoder(model, stream_params(model, m.stream), m.stream.version)
            except EXPECTED:
                return
        elif isinstance(m, Estimate):
            rate.on_feedback(m)
            rate.may_send(now) and rate.sent(now, len(msg), len(msg))
            rate.target_kbps()
        elif isinstance(m, Nack):  # about our stream: a sender with nothing kept answers none
            Redundancy().retransmission(m)
        elif receiver is not None and decoder is not None and isinstance(m, (FrameMessage, Late, Retransmission)):
            if isinstance(m, FrameMessage):
                estimator.on_message(now, len(msg), m.packet.timestamp_ms)
                delivery = receiver.on_message(m, len(msg))
            elif isinstance(m, Late):  # late, or reordered into a repair
                estimator.on_message(now, len(msg), None)
                delivery = receiver.on_late_message(m, len(msg))
            else:
                estimator.on_message(now, len(msg), None)
                delivery = receiver.on_retransmission(m)
            if delivery is not None:
                try:
                    for ptype, payload in delivery.steps:
                        decoder.decode(ptype, payload)
                except EXPECTED:
                    decoder.reset()
                    receiver.on_undecodable(delivery.sync_id)
            receiver.nack_due()
            receiver.want_keyframe() and receiver.keyframe_request()


def seed_hello() -> list[bytes]:
    from sganc_stream.bitstream.container import decode_container
    from sganc_stream.bitstream.packet import Packet, PacketType, pack
    from sganc_stream.rtc.congestion import Estimate
    from sganc_stream.rtc.transport import Hello, Nack, Retransmission, feedback_message, refusal

    out = []
    for s in streams():
        c = decode_container(s)
        hello = Hello(c.header.model_id, c.header, 1_700_000_000_000).to_bytes()
        out.append(SPLIT.join([hello, *(pack(p, c.header.fps) for p in c.packets),
                               pack(Packet(PacketType.KEYFRAME_REQUEST, 2, 0, 0), 1.0)]))
        if len(c.packets) > 3:  # a sender offering retransmission, a lost packet, the NACK's answer (SPEC §8.7)
            hello = Hello(c.header.model_id, c.header, 1_700_000_000_000, rtx=True).to_bytes()
            lost = c.packets[2]
            out.append(SPLIT.join([hello, *(pack(p, c.header.fps) for p in c.packets[:2] + c.packets[3:]),
                                   Retransmission(lost.seq, ((lost.type, lost.payload),)).to_bytes(),
                                   Nack(lost.seq, lost.seq).to_bytes()]))
    out.append(Hello(codec().model_id, None, 5).to_bytes())
    out.append(refusal("model mismatch"))
    out.append(SPLIT.join(feedback_message(Estimate(n, 20_000 - 1000 * n, 15_000)) for n in range(5)))
    return out


# ----------------------------------------------------------------------------------------------------
# Signaling


def run_signaling(data: bytes) -> None:
    """A peer following the server: each line a message; offers and answers are checked as the session does."""
    from sganc_stream.rtc.signaling import parse_server_message, remote_description

    for line in data.decode("utf-8", "surrogateescape").split("\n")[:8]:
        try:
            msg = parse_server_message(line)
            if msg.get("type") in ("offer", "answer"):
                remote_description(msg, str(msg["type"]))
        except EXPECTED:
            pass


# An offer and an answer as two aiortc 1.16 peers with the call's data channel wrote them (documentation addresses;
# written here rather than generated, since gathering candidates would touch the network).
OFFER = """v=0
o=- 4005018374 4005018374 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=application 47770 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 192.0.2.2
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 192.0.2.2 47770 typ host
a=end-of-candidates
a=ice-ufrag:pg3H
a=ice-pwd:SD6nup0UFt7usQxwJJ2ZKq
a=fingerprint:sha-256 C0:25:60:C7:6E:55:63:96:77:2D:10:7A:7D:BD:9E:9D:1E:60:29:6E:81:00:6F:24:B4:22:14:80:DE:21:69:3B
a=setup:actpass
""".replace("\n", "\r\n")
ANSWER = OFFER.replace("actpass", "active").replace("pg3H", "x8Qe").replace("192.0.2.2", "192.0.2.3")


def sdp_examples() -> tuple[str, str]:
    return OFFER, ANSWER


def seed_signaling() -> list[bytes]:
    offer, answer = sdp_examples()
    lines = [{"type": "joined", "room": "r", "peers": 1}, {"type": "peer-joined"}, {"type": "offer", "sdp": offer},
             {"type": "answer", "sdp": answer}, {"type": "peer-left"}, {"type": "refused", "reason": "wrong token"}]
    return [json.dumps(m).encode() for m in lines] + [b"\n".join(json.dumps(m).encode() for m in lines)]


def run_signaling_join(data: bytes) -> None:
    from sganc_stream.rtc.signaling import SignalingServer, parse_join

    server = SignalingServer.__new__(SignalingServer)  # the admission rules without an HTTP app
    server.rooms = {}
    try:
        room, token = parse_join(data.decode("utf-8", "surrogateescape"))
        server._admit(room, token)
    except EXPECTED:
        pass


def seed_signaling_join() -> list[bytes]:
    return [json.dumps({"type": "join", "room": "room-1", "token": "s3cret"}).encode(), b'{"type": "join"}']


def run_description_line(data: bytes) -> None:
    from sganc_stream.rtc.signaling import description_from_line

    try:
        description_from_line(data.decode("utf-8", "surrogateescape"), "offer")
    except EXPECTED:
        pass


def seed_description_line() -> list[bytes]:
    from aiortc import RTCSessionDescription

    from sganc_stream.rtc.signaling import description_to_line

    offer, answer = sdp_examples()
    return [description_to_line(RTCSessionDescription(offer, "offer")).encode(),
            description_to_line(RTCSessionDescription(answer, "answer")).encode()]


# ----------------------------------------------------------------------------------------------------
# Files: .npy latents, bundles, checkpoints, videos


def run_npy(data: bytes) -> None:
    """``latents encode IN.npy``: read the array, check it against the model, code it."""
    from sganc_stream.cli.latents import load_npy
    from sganc_stream.latent.codec import StreamParams
    from sganc_stream.latent.sequence import encode_sequence

    try:
        a = load_npy(str(scratch("in.npy", data)))
        encode_sequence(codec(), a[:16], StreamParams("open", 3, 0, 0))
    except EXPECTED:
        pass


def seed_npy() -> list[bytes]:
    out = []
    for a in (latents(3), latents(2).astype(np.float64), np.zeros((1, 4, 8), np.float16), np.arange(5)):
        buf = io.BytesIO()
        np.save(buf, a)
        out.append(buf.getvalue())
    return out


def load_model_file(path: Path) -> None:
    """Every loader a model file meets: bundle, latent codec, full checkpoint (generator, encoder)."""
    from sganc_stream.bundle import load_bundle
    from sganc_stream.latent.model import LatentCodecModel
    from sganc_stream.models.checkpoint import load_checkpoint

    for load in (lambda: LatentCodecModel.from_bundle(load_bundle(path), str(path)), lambda: load_checkpoint(path)):
        try:
            load()
        except EXPECTED:
            pass


def run_bundle(data: bytes) -> None:
    load_model_file(scratch("model.safetensors", data))


def seed_bundle() -> list[bytes]:
    return [codec_path().read_bytes()]


def run_bundle_config(data: bytes) -> None:
    """The JSON config of a bundle (what decides every shape and count) with the tiny codec's tensors."""
    from safetensors.torch import save

    tensors = load_codec_tensors()
    blob = save(tensors, metadata={"sganc": data.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode()})
    load_model_file(scratch("config.safetensors", blob))


@cache
def load_codec_tensors() -> dict[str, torch.Tensor]:
    from sganc_stream.bundle import load_bundle

    return load_bundle(codec_path()).tensors


def seed_bundle_config() -> list[bytes]:
    from safetensors import safe_open

    with safe_open(str(codec_path()), framework="pt") as f:
        meta = f.metadata()["sganc"]
    cfg = json.loads(meta)
    with_gen = {**cfg, "generator": {"size": 64, "style_dim": 8, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 8},
                "encoder": {"type": "fast", "input_size": 32, "n_latent": 10, "width": 8, "base_channels": 2, "max_channels": 4}}
    return [meta.encode(), json.dumps(with_gen).encode()]


def run_checkpoint(data: bytes) -> None:
    from sganc_stream.models.checkpoint import load_checkpoint

    try:
        load_checkpoint(scratch("model.pt", data))
    except EXPECTED:
        pass


def seed_checkpoint() -> list[bytes]:
    small = {"style.1.weight": torch.zeros(4, 4), "to_rgbs.3.conv.weight": torch.zeros(1, 3, 16, 1, 1)}
    objs = [{"g_ema": small, "latent_avg": torch.zeros(4)},
            {"state_dict": {"encoder.a": torch.zeros(2), "decoder.style.1.weight": torch.zeros(2, 2)},
             "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 64, "start_from_latent_avg": True},
             "latent_avg": torch.zeros(10, 512)},
            {"state_dict": {}, "opts": {"output_size": 64, "input_nc": 3, "learn_in_w": False}}]
    out = []
    for o in objs:
        buf = io.BytesIO()
        torch.save(o, buf)
        out.append(buf.getvalue())
    return out


def run_video(data: bytes) -> None:
    from sganc_stream.video import VideoReader

    try:
        with VideoReader(scratch("clip.bin", data)) as reader:
            for i, _ in enumerate(reader):
                if i >= MAX_VIDEO_FRAMES:
                    break
    except EXPECTED:
        pass


def seed_video() -> list[bytes]:
    import av

    out = []
    rng = np.random.default_rng(0)
    for fmt, codec_name, pix in (("mp4", "libx264", "yuv420p"), ("webm", "libvpx-vp9", "yuv420p"), ("avi", "mjpeg", "yuvj420p")):
        buf = io.BytesIO()
        with av.open(buf, "w", format=fmt) as c:
            s = c.add_stream(codec_name, rate=Fraction(25))
            s.width, s.height, s.pix_fmt = 16, 16, pix
            for i in range(4):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (16, 16, 3), np.uint8), format="rgb24")
                frame.pts = i
                c.mux(s.encode(frame))
            c.mux(s.encode(None))
        out.append(buf.getvalue())
    return out


# ----------------------------------------------------------------------------------------------------

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("packet", run_packet, seed_packets, 5.0, 4096),
    Target("payload", run_payload, seed_payloads, 2.0, 4096),
    Target("container", run_container, seed_streams, 1.5, 8192),
    Target("container_crc", run_container_crc, seed_streams, 1.5, 8192),
    Target("hello", run_hello, seed_hello, 1.0, 8192),
    Target("signaling", run_signaling, seed_signaling, 3.0, 8192),
    Target("signaling_join", run_signaling_join, seed_signaling_join, 2.0, 1024),
    Target("description_line", run_description_line, seed_description_line, 2.0, 8192),
    Target("npy", run_npy, seed_npy, 0.5, 4096),
    Target("bundle", run_bundle, seed_bundle, 0.05, 65536),
    Target("bundle_config", run_bundle_config, seed_bundle_config, 0.02, 4096),
    Target("checkpoint", run_checkpoint, seed_checkpoint, 0.05, 8192),
    Target("video", run_video, seed_video, 0.2, 16384),
]}
