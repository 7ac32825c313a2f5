"""The call's data-channel protocol: wire cost, handshake, refusals, loss injection, gap handling, pacing."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.bitstream.packet import Packet, PacketReader, PacketType, pack
from sganc_stream.errors import BitstreamError, ModelMismatchError, SgancError
from sganc_stream.rtc.transport import (CHANNEL_OPTIONS, DEFAULT_PEER_MAX_MESSAGE, Hello, LossInjector, MessageTooLarge,
                                        Pacer, RefusedError, StreamReceiver, check_message_size, check_models,
                                        chunk_bytes, parse_message, peer_max_message, refusal, restamp, wire_bytes)

MODEL = "ab" * 32
FPS = 10.0


def header(model_id: str = MODEL) -> StreamHeader:
    return StreamHeader(model_id, 10, 32, "open", 10, 1.0, FPS, 0, 0)


class FakeDecoder:
    """Mimics LatentStreamDecoder: inter frames need a state; an intra frame sets it."""

    def __init__(self) -> None:
        self.state: int | None = None
        self.resets = 0

    def latents(self, packet: Packet) -> np.ndarray:
        if packet.payload == b"corrupt":
            raise BitstreamError("corrupted payload: check value mismatch")
        if packet.type.is_intra:
            self.state = 0
        elif self.state is None:
            raise BitstreamError("inter frame without a preceding intra frame")
        self.state += 1
        return np.full((10, 32), float(packet.seq), np.float32)

    def reset(self) -> None:
        self.state = None
        self.resets += 1


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def frame(seq: int, ptype: PacketType = PacketType.INTER) -> Packet:
    return Packet(ptype, seq, seq, seq * 100, b"\x01\x02")


def test_channel_is_unordered_without_retransmits() -> None:
    assert CHANNEL_OPTIONS["ordered"] is False and CHANNEL_OPTIONS["maxRetransmits"] == 0


def test_wire_cost_formula() -> None:
    assert chunk_bytes(1) == 16 + 4 and chunk_bytes(4) == 20 and chunk_bytes(5) == 24
    assert wire_bytes(10) == chunk_bytes(10) + 77


def test_hello_round_trip_and_mismatch() -> None:
    hello = Hello(MODEL, header(), 123456)
    assert parse_message(hello.to_bytes(), None) == hello
    receiver_only = Hello(MODEL, None, 5)
    assert parse_message(receiver_only.to_bytes(), None) == receiver_only
    check_models(MODEL, MODEL)
    with pytest.raises(ModelMismatchError, match="model mismatch: the other side uses model cdcdcdcdcdcd"):
        check_models(MODEL, "cd" * 32)
    with pytest.raises(BitstreamError, match="names another model"):
        parse_message(Hello(MODEL, header("cd" * 32), 0).to_bytes(), None)


def test_refusal_and_malformed_messages() -> None:
    with pytest.raises(RefusedError, match="the other side refused the call: model mismatch"):
        parse_message(refusal("model mismatch: x"), None)
    with pytest.raises(RefusedError, match="call protocol 9"):
        parse_message(msgpack.packb({"sganc": 9}), None)
    with pytest.raises(BitstreamError, match="before the other side's hello"):
        parse_message(pack(frame(0, PacketType.INTRA), FPS), None)
    with pytest.raises(BitstreamError):
        parse_message(b"\x95\xff", PacketReader(FPS))
    with pytest.raises(BitstreamError, match="text"):
        parse_message("hi", None)  # type: ignore[arg-type]


def test_loss_injector_is_seeded() -> None:
    a, b = LossInjector(0.2, seed=7), LossInjector(0.2, seed=7)
    drops = [a.drop() for _ in range(1000)]
    assert drops == [b.drop() for _ in range(1000)]
    assert 150 < a.dropped < 250
    assert not any(LossInjector(0.0).drop() for _ in range(100))
    with pytest.raises(SgancError):
        LossInjector(1.0)


def test_gap_requests_keyframe_until_an_intra_frame_arrives() -> None:
    clock, dec = Clock(), FakeDecoder()
    rx = StreamReceiver(Hello(MODEL, header(), 1_000_000), dec, retry_ms=200, clock=clock)
    assert rx.want_keyframe()  # not yet synchronized: ask at once
    got = rx.on_packet(frame(0, PacketType.INTRA), 10)
    assert got is not None and got.capture_ms == 1_000_000 and got.recovered_ms is None
    assert rx.on_packet(frame(1), 10) is not None and rx.synced
    assert not rx.want_keyframe()
    clock.t += 0.3
    assert rx.on_packet(frame(3), 10) is None  # frame 2 lost
    assert not rx.synced and rx.gaps == 1 and dec.resets == 1
    assert rx.want_keyframe() and not rx.want_keyframe()  # once, then rate-limited
    clock.t += 0.1
    assert rx.on_packet(frame(4), 10) is None and not rx.want_keyframe()
    clock.t += 0.15
    assert rx.want_keyframe()  # retried after retry_ms: the first request may have been lost
    got = rx.on_packet(frame(5, PacketType.INTRA), 10)
    assert got is not None and got.recovered_ms == pytest.approx(250)
    assert rx.on_packet(frame(6), 10) is not None
    assert rx.frames == 4 and rx.lost == 3  # 2 never arrived, 3 and 4 arrived out of sync
    rx.on_packet(Packet(PacketType.END, 7, 7, 700), 5)
    assert rx.ended


def test_keyframe_request_is_a_packet() -> None:
    rx = StreamReceiver(Hello(MODEL, header(), 0), FakeDecoder())
    rx.on_packet(frame(0, PacketType.INTRA), 10)
    reader = PacketReader(FPS)
    req = reader.unpack(rx.keyframe_request())
    assert req.type == PacketType.KEYFRAME_REQUEST and req.seq == 1


def test_keyframe_requests_do_not_move_the_stream_reader() -> None:
    """A request carries a sequence number of the *other* stream; it must not unwrap this stream's numbers."""
    reader = PacketReader(FPS)
    parse_message(pack(frame(0, PacketType.INTRA), FPS), reader)
    parse_message(pack(frame(1), FPS), reader)
    request = parse_message(pack(Packet(PacketType.KEYFRAME_REQUEST, 500, 0, 0), FPS), reader)
    assert isinstance(request, Packet) and request.seq == 500
    assert parse_message(pack(frame(3), FPS), reader).seq == 3  # not 3 + 256 * k
    rx = StreamReceiver(Hello(MODEL, header(), 0), FakeDecoder())
    assert rx.keyframe_request()[:2] == bytes([0x95, int(PacketType.KEYFRAME_REQUEST)])


def test_undecodable_message_desynchronizes() -> None:
    rx = StreamReceiver(Hello(MODEL, header(), 0), FakeDecoder())
    rx.on_packet(frame(0, PacketType.INTRA), 10)
    rx.on_undecodable()
    assert not rx.synced and rx.gaps == 1


def test_pacer_skips_while_the_channel_is_backed_up() -> None:
    pacer = Pacer(1000)
    assert pacer.may_send(0) and pacer.may_send(1000)
    assert not pacer.may_send(1001)
    assert pacer.skipped == 1


def test_restamped_inter_packets_stay_compact() -> None:
    reader = PacketReader(FPS)
    reader.unpack(pack(restamp(frame(0, PacketType.INTRA), 0, 0), FPS))
    p = restamp(Packet(PacketType.INTER, 1, 1, 0, b"x" * 5), 40, 4001)  # 39 camera frames skipped
    data = pack(p, FPS)
    assert len(data) == 1 + 1 + 1 + 1 + 1 + 2 + 5
    assert reader.unpack(data) == p


def test_no_face_packets_keep_sync_and_reveal_lost_face_packets() -> None:
    clock, dec = Clock(), FakeDecoder()
    rx = StreamReceiver(Hello(MODEL, header(), 0), dec, clock=clock)
    lead_in = rx.on_packet(Packet(PacketType.NO_FACE, 0, 0, 0), 8)  # before any face: shown as no face
    assert lead_in is not None and lead_in.latents is None and not rx.synced
    assert rx.on_packet(frame(0, PacketType.INTRA), 10) is not None and rx.on_packet(frame(1), 10) is not None
    gone = rx.on_packet(Packet(PacketType.NO_FACE, 2, 5, 500), 8)  # carries the next face packet's number
    assert gone is not None and gone.latents is None and rx.synced and rx.expected == 2
    assert rx.on_packet(frame(2), 10) is not None and rx.synced  # the face is back: inter, still in sync
    late = rx.on_packet(Packet(PacketType.NO_FACE, 5, 9, 900), 8)  # face packets 3 and 4 never arrived
    assert late is not None and not rx.synced and rx.want_keyframe()
    new = rx.on_packet(frame(5, PacketType.NEW_FACE), 10)  # a new-face intra frame resynchronises like an intra
    assert new is not None and rx.synced


def test_corrupted_payload_is_dropped_and_a_keyframe_requested() -> None:
    clock, dec = Clock(), FakeDecoder()
    rx = StreamReceiver(Hello(MODEL, header(), 0), dec, clock=clock)
    rx.on_packet(frame(0, PacketType.INTRA), 10)
    assert not rx.want_keyframe()
    assert rx.on_packet(Packet(PacketType.INTER, 1, 1, 100, b"corrupt"), 10) is None
    assert not rx.synced and dec.resets == 1 and rx.want_keyframe()
    assert rx.on_packet(frame(2), 10) is None  # nothing decodes until an intra frame
    assert rx.on_packet(frame(3, PacketType.INTRA), 10) is not None and rx.synced


def test_peer_max_message_size_from_the_remote_description() -> None:
    """aiortc raises inside send above the size the other side's SDP announces; the sender reads it first."""
    aiortc = pytest.importorskip("aiortc")
    import asyncio

    async def answer_sdp() -> str:
        a, b = aiortc.RTCPeerConnection(), aiortc.RTCPeerConnection()
        a.createDataChannel("x", **CHANNEL_OPTIONS)
        b.createDataChannel("x", **CHANNEL_OPTIONS)
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        sdp = b.localDescription.sdp
        await a.close()
        await b.close()
        return sdp

    sdp = asyncio.run(answer_sdp())
    assert peer_max_message(sdp) == 262144  # what aiortc announces
    small = sdp.replace("a=max-message-size:262144", "a=max-message-size:1200")
    assert peer_max_message(small) == 1200
    absent = "\r\n".join(line for line in sdp.splitlines() if not line.startswith("a=max-message-size"))
    assert peer_max_message(absent) == DEFAULT_PEER_MAX_MESSAGE == 65536  # RFC 8841's default
    check_message_size(1200, 1200)
    check_message_size(10**6, 0)  # 0: no limit
    with pytest.raises(MessageTooLarge, match="1201-byte packet exceeds the other side's max message size"):
        check_message_size(1201, peer_max_message(small))
