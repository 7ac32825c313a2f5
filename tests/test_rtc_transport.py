"""The call protocol (SPEC.md §8): channel parameters, hello exchange, frame messages with redundancy, gap handling,
NACKs and retransmissions, keyframe requests, late packets, pacing."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from sganc_stream.bitstream.container import StreamHeader
from sganc_stream.bitstream.packet import Packet, PacketReader, PacketType, pack
from sganc_stream.errors import BitstreamError, ModelMismatchError, SgancError
from fuzz.targets import OFFER
from sganc_stream.rtc.transport import (CHANNEL_LABEL, CHANNEL_OPTIONS, DEFAULT_PEER_MAX_MESSAGE, NACK_TRIES,
                                        RTX_HISTORY, Delivery, FrameMessage, Handshake, Hello, HelloAck, IncompatibleError,
                                        Late, MalformedFeedback, MessageTooLarge, Nack, Pacer, Redundancy,
                                        RefusedError, Retransmission, StreamReceiver, check_message_size,
                                        check_models, frame_message, parse_message, peer_max_message, refusal,
                                        restamp)
from sganc_stream.rtc.wire import CHUNK_DATA, sctp_chunks

MODEL = "ab" * 32
FPS = 10.0
I, P, R = PacketType.INTRA, PacketType.INTER, PacketType.INTER_RESIDUAL


def header(model_id: str = MODEL) -> StreamHeader:
    return StreamHeader(model_id, 10, 32, "open", 10, 1.0, FPS, 0, 0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def frame(seq: int, ptype: PacketType = P, payload: bytes | None = None) -> Packet:
    return Packet(ptype, seq, seq, seq * 100, payload if payload is not None else bytes([seq % 256]) * 4)


def receive(rx: StreamReceiver, data: bytes) -> object:
    """Parse a message as the call does and feed it to the receiver."""
    msg = parse_message(data, rx.reader)
    if isinstance(msg, Late):  # the Late itself when it is only late; the delivery when it ended a repair
        return rx.on_late_message(msg, len(data)) or msg
    assert isinstance(msg, FrameMessage)
    return rx.on_message(msg, len(data))


def test_channel_is_negotiated_unordered_without_retransmits() -> None:
    assert CHANNEL_LABEL == "sganc"
    assert CHANNEL_OPTIONS == {"ordered": False, "maxRetransmits": 0, "negotiated": True, "id": 0}


def test_hello_ack_and_refusal_round_trip() -> None:
    hello = Hello(MODEL, header(), 123456)
    data = hello.to_bytes()
    assert 0x80 <= data[0] <= 0x8F  # a fixmap: told apart from packets by its first byte
    assert parse_message(data, None) == hello
    assert parse_message(Hello(MODEL, None, 5).to_bytes(), None) == Hello(MODEL, None, 5)
    assert parse_message(HelloAck(123456).to_bytes(), None) == HelloAck(123456)
    with pytest.raises(RefusedError, match="the other side refused the call: model mismatch"):
        parse_message(refusal("model mismatch: x"), None)


def test_a_hellos_stream_version_is_told_by_its_fields() -> None:
    """SPEC §8.4: ``steps`` → v4 (rate control), ``residual`` alone → v3, neither → v2; a bad step list is malformed."""
    for version, residual, steps in ((4, "irwin_hall", (1.0, 2.0, 4.0)), (3, "empirical", ()), (2, "irwin_hall", ())):
        sent = Hello(MODEL, replace(header(), residual=residual, steps=steps, version=version), 9)
        got = parse_message(sent.to_bytes(), None)
        assert got == sent and isinstance(got, Hello) and got.stream is not None and got.stream.version == version
    stream = replace(header(), steps=(1.0, 1.5), version=4).to_map()  # 1.5 is no integer multiple of 1.0
    with pytest.raises(BitstreamError, match="malformed header: field out of range"):
        parse_message(msgpack.packb({"sganc": 2, "model_id": bytes.fromhex(MODEL), "stream": stream, "epoch_ms": 0}),
                      None)


def test_other_protocol_versions_and_malformed_hellos() -> None:
    with pytest.raises(IncompatibleError, match="speaks call protocol 1, this side 2"):
        parse_message(msgpack.packb({"sganc": 1, "model_id": b"x" * 32, "stream": None, "epoch_ms": 0}), None)
    with pytest.raises(IncompatibleError, match="call protocol None"):
        parse_message(msgpack.packb({"hello": 1}), None)
    with pytest.raises(BitstreamError, match="names another model"):
        parse_message(Hello(MODEL, header("cd" * 32), 0).to_bytes(), None)
    with pytest.raises(BitstreamError, match="malformed hello"):
        parse_message(msgpack.packb({"sganc": 2, "model_id": b"x" * 31, "epoch_ms": 0}), None)
    with pytest.raises(BitstreamError, match="malformed hello acknowledgement"):
        parse_message(msgpack.packb({"sganc": 2, "ack": True}), None)
    with pytest.raises(BitstreamError, match="before the other side's hello"):
        parse_message(pack(frame(0, I), FPS), None)
    with pytest.raises(BitstreamError):
        parse_message(b"\x95\xff", PacketReader(FPS))
    with pytest.raises(BitstreamError, match="text"):
        parse_message("hi", None)  # type: ignore[arg-type]
    check_models(MODEL, MODEL)
    with pytest.raises(ModelMismatchError, match="model mismatch: the other side uses model cdcdcdcdcdcd"):
        check_models(MODEL, "cd" * 32)


def test_hello_is_repeated_until_acknowledged_and_times_out() -> None:
    clock = Clock()
    ours = Hello(MODEL, header(), 77)
    hs = Handshake(ours, retry_s=0.25, timeout_s=5.0, clock=clock)
    assert hs.due() == ours.to_bytes() and hs.due() is None
    clock.t += 0.3
    assert hs.due() is not None and hs.sent == 2  # the first may have been lost
    hs.on_ack(HelloAck(76))  # not ours
    clock.t += 0.3
    assert hs.due() is not None
    assert hs.on_hello(Hello(MODEL, None, 9)) and not hs.on_hello(Hello(MODEL, None, 9))
    hs.on_ack(HelloAck(77))
    clock.t += 1.0
    assert hs.acked and hs.established and hs.due() is None
    clock.t += 10
    assert hs.failure() is None
    silent = Handshake(ours, timeout_s=2.0, clock=clock)
    clock.t += 1.9
    assert silent.failure() is None
    clock.t += 0.2
    assert "sent no hello within 2 s" in str(silent.failure())
    deaf = Handshake(ours, timeout_s=2.0, clock=clock)
    deaf.on_hello(Hello(MODEL, None, 1))
    clock.t += 2.1
    assert "did not acknowledge" in str(deaf.failure())


def test_frame_message_is_the_packet_or_the_packet_plus_redundancy() -> None:
    assert frame_message(frame(3), FPS) == pack(frame(3), FPS)  # without redundancy: exactly a .sgnc packet
    data = frame_message(frame(3), FPS, ((P, b"two"), (P, b"one")))
    assert data[0] == 0x96
    reader = PacketReader(FPS)
    reader.unpack(pack(frame(1, I), FPS))
    msg = parse_message(data, reader)
    assert msg == FrameMessage(frame(3), ((P, b"two"), (P, b"one")))
    bad = frame_message(frame(3), FPS, ((PacketType.KEYFRAME_REQUEST, b""),))
    with pytest.raises(BitstreamError, match="not a frame"):
        parse_message(bad, reader)
    too_many = bytes([0x96]) + pack(frame(4), FPS)[1:] + msgpack.packb([[1, b"x"]] * 5)
    with pytest.raises(BitstreamError, match="1-4 entries"):
        parse_message(too_many, reader)


def test_redundancy_carries_predecessors_back_to_the_last_intra_frame() -> None:
    red = Redundancy(depth=2)
    msgs = [red.message(frame(s, t), FPS) for s, t in [(0, I), (1, P), (2, P), (3, P), (4, I), (5, P)]]
    reader = PacketReader(FPS)
    parsed = [parse_message(m, reader) for m in msgs]
    assert [m.redundant for m in parsed] == [  # type: ignore[union-attr]
        (), ((I, frame(0).payload),), ((P, frame(1).payload), (I, frame(0).payload)),
        ((P, frame(2).payload), (P, frame(1).payload)), (), ((I, frame(4).payload),)]
    assert red.carried == 6
    assert len(Redundancy(depth=0).message(frame(1), FPS)) == len(pack(frame(1), FPS))
    with pytest.raises(SgancError, match="0..4"):
        Redundancy(depth=5)


def test_redundancy_never_adds_an_sctp_chunk() -> None:
    red = Redundancy(depth=1)
    big = b"\x01" * (CHUNK_DATA - 40)
    red.message(frame(0, I), FPS)
    red.message(frame(1, P, big), FPS)
    after_big = red.message(frame(2, P, b"\x02" * 50), FPS)  # the big one would need a second chunk
    assert after_big == pack(frame(2, P, b"\x02" * 50), FPS)
    unfit = Redundancy(depth=1, fit=False)
    unfit.message(frame(1, P, big), FPS)
    assert sctp_chunks(len(unfit.message(frame(2, P, b"\x02" * 50), FPS))) == 2


def test_redundancy_bridges_a_loss_without_a_keyframe() -> None:
    clock = Clock()
    red = Redundancy(depth=1)
    msgs = [red.message(frame(s, I if s == 0 else P), FPS) for s in range(7)]
    rx = StreamReceiver(Hello(MODEL, header(), 1_000_000), clock=clock)
    assert rx.want_keyframe()  # not yet synchronized: ask at once
    first = receive(rx, msgs[0])
    assert first.steps == [(I, frame(0).payload)] and first.capture_ms == 1_000_000  # type: ignore[union-attr]
    assert receive(rx, msgs[1]) is not None
    # msgs[2] lost: msgs[3] carries it
    bridged = receive(rx, msgs[3])
    assert bridged.steps == [(P, frame(2).payload), (P, frame(3).payload)]  # type: ignore[union-attr]
    assert bridged.recovered == 1 and bridged.recovered_ms is None  # type: ignore[union-attr]
    assert rx.synced and rx.gaps == 0 and not rx.want_keyframe()
    # msgs[4] and msgs[5] both lost: msgs[6] carries 5 only, so a keyframe is needed
    clock.t += 1.0
    assert receive(rx, msgs[6]) is None and rx.gaps == 1 and rx.want_keyframe()
    assert rx.frames == 4 and rx.recovered == 1 and rx.lost == 3  # 4 and 5 never arrived; 6 could not be used


def rtx_receiver(clock: Clock) -> StreamReceiver:
    """A receiver of a stream whose sender's hello offers retransmission."""
    return StreamReceiver(Hello(MODEL, header(), 0, rtx=True), retry_ms=200, clock=clock)


def test_a_loss_redundancy_cannot_carry_is_repaired_by_retransmission_not_a_keyframe() -> None:
    """The field case (B's stream in the 20 %-loss loopback call): inter packets too large for two to share one
    SCTP chunk, so no message carries its predecessor, and every single loss used to cost a keyframe. With a
    sender that offers retransmission, the receiver holds what follows, NACKs the gap and shows the newest held
    frame once the retransmission arrives; the intra frame is the last resort."""
    clock = Clock()
    red = Redundancy(depth=2)
    big = [bytes([s]) * (2300 if s == 0 else 700) for s in range(8)]  # an intra frame, then inter frames
    msgs = [red.message(frame(s, I if s == 0 else P, big[s]), FPS) for s in range(8)]
    assert all(m == pack(frame(s, I if s == 0 else P, big[s]), FPS) for s, m in enumerate(msgs))  # no redundancy fits
    rx = rtx_receiver(clock)
    receive(rx, msgs[0]), receive(rx, msgs[1])
    # msgs[2] and msgs[3] lost
    assert receive(rx, msgs[4]) is None and not rx.synced and rx.gaps == 0
    assert not rx.want_keyframe()  # a NACK first
    nack = rx.nack_due()
    assert nack == Nack(2, 3) and rx.nack_due() is None  # once, then after the retry time
    clock.t += 0.02
    assert receive(rx, msgs[5]) is None  # held: it chains on 2..4
    data = red.retransmission(parse_message(nack.to_bytes(), None))  # type: ignore[arg-type]
    assert data is not None
    rtx = parse_message(data, rx.reader)
    assert rtx == Retransmission(2, ((P, big[2]), (P, big[3])))
    clock.t += 0.005
    got = rx.on_retransmission(rtx)  # type: ignore[arg-type]
    assert got is not None and got.packet.seq == 5  # the newest held frame is shown
    assert got.steps == [(P, big[s]) for s in range(2, 6)] and got.recovered == 3
    assert got.repaired_ms == pytest.approx(25) and got.recovered_ms is None
    assert rx.synced and rx.gaps == 0 and rx.repaired == 1 and not rx.want_keyframe()
    assert receive(rx, msgs[6]).steps == [(P, big[6])]  # type: ignore[union-attr]
    assert rx.frames == 7 and rx.lost == 0
    assert rx.rtt_ms == pytest.approx(25)  # NACK to retransmission


def test_a_lost_nack_is_repeated_then_a_keyframe_is_the_last_resort() -> None:
    clock = Clock()
    rx = rtx_receiver(clock)
    receive(rx, pack(frame(0, I), FPS))
    clock.t += 0.1
    receive(rx, pack(frame(2), FPS))  # 1 lost
    nacks = [rx.nack_due()]
    for _ in range(NACK_TRIES + 1):
        assert not rx.want_keyframe()
        clock.t += 0.2  # no retransmission comes (lost, or the NACKs were)
        receive(rx, pack(frame(int(clock.t * 10) % 200 + 3), FPS))  # later frames are held meanwhile
        nacks.append(rx.nack_due())
        if rx.want_keyframe():
            break
    assert [n for n in nacks if n is not None][:1] == [Nack(1, 1)] and sum(n is not None for n in nacks) == NACK_TRIES
    assert rx.gaps == 1 and not rx.synced and rx.repair is None  # given up: out of sync, asking for a keyframe
    got = receive(rx, pack(frame(90, I), FPS))
    assert got.recovered_ms == pytest.approx(1000 * (clock.t - 1000.1))  # type: ignore[union-attr]


@pytest.mark.parametrize("seq0", [0, 254])  # and across the 8-bit wrap of the compact sequence numbers
def test_a_packet_reordered_into_a_repair_fills_the_gap(seq0: int) -> None:
    """An unordered channel (or the network) can deliver packet 2 after 3: 3 opens a repair (no redundancy carries
    2) and 2, behind the last packet read in 8-bit numbers, used to be dropped as late, leaving the repair to a
    retransmission a round trip later, or to a keyframe when the NACK was lost. Now 2 fills the gap: the newest held
    frame is shown at once, in the sender's exact chain, and a retransmission that comes later is ignored."""
    clock = Clock()
    red = Redundancy(depth=0)
    seqs = [seq0 + k for k in range(6)]
    msgs = {s: red.message(frame(s, I if s == seq0 else P), FPS) for s in seqs}
    rx = rtx_receiver(clock)
    rx.reader.last_seq = seq0 - 1  # a stream joined at seq0 (its intra frame carries the full number)
    for s in (seq0, seq0 + 1, seq0 + 3):  # seq0 + 2 is overtaken by seq0 + 3
        receive(rx, msgs[s])
    assert rx.repair is not None and rx.nack_due() == Nack(seq0 + 2, seq0 + 2)
    clock.t += 0.01
    got = receive(rx, msgs[seq0 + 2])
    assert isinstance(got, Delivery) and got.packet.seq == seq0 + 3, got
    assert got.steps == [(P, frame(seq0 + 2).payload), (P, frame(seq0 + 3).payload)]
    assert rx.synced and rx.repair is None and rx.late == 0 and rx.reader.last_seq == seq0 + 3
    assert rx.on_retransmission(Retransmission(seq0 + 2, ((P, frame(seq0 + 2).payload),))) is None
    assert receive(rx, msgs[seq0 + 2]) is not None and rx.late == 1  # a duplicate now: late
    assert receive(rx, msgs[seq0 + 4]).steps == [(P, frame(seq0 + 4).payload)]  # type: ignore[union-attr]
    assert rx.frames == 5 and rx.lost == 0 and not rx.want_keyframe()


def test_a_sender_without_retransmission_gets_keyframe_requests_only() -> None:
    """Interoperation: a hello without ``rtx`` (an older peer, or --no-retransmit) is never sent a NACK."""
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=Clock())
    receive(rx, pack(frame(0, I), FPS))
    receive(rx, pack(frame(2), FPS))
    assert rx.nack_due() is None and rx.want_keyframe() and rx.gaps == 1


def test_an_intra_frame_or_a_retransmitted_one_ends_a_repair() -> None:
    clock = Clock()
    rx = rtx_receiver(clock)
    receive(rx, pack(frame(0, I), FPS))
    receive(rx, pack(frame(2), FPS))
    assert rx.nack_due() == Nack(1, 1)
    got = receive(rx, pack(frame(3, I), FPS))  # the sender could not serve it: an intra frame
    assert got.steps == [(I, frame(3).payload)] and rx.synced and rx.repair is None  # type: ignore[union-attr]
    assert rx.gaps == 1 and got.recovered_ms is not None  # type: ignore[union-attr]
    # a retransmission that starts at the sender's last intra frame resynchronises from it
    receive(rx, pack(frame(5), FPS))
    rx.nack_due()
    got = rx.on_retransmission(Retransmission(4, ((I, b"i4"),)))
    assert got.steps == [(I, b"i4"), (P, frame(5).payload)] and rx.synced  # type: ignore[union-attr]
    assert rx.on_retransmission(Retransmission(4, ((I, b"i4"),))) is None  # a duplicate answer: nothing to do


def test_retransmission_history_starts_at_the_last_intra_frame_and_is_bounded() -> None:
    red = Redundancy(depth=0)
    intra = b"i" * 300  # as in the call, an intra frame is many times an inter frame
    for s in range(5):
        red.message(frame(s, I, intra) if s in (0, 3) else frame(s), FPS)
    answer = lambda first, last: parse_message(red.retransmission(Nack(first, last)), None)  # noqa: E731
    assert answer(4, 4) == Retransmission(4, ((P, frame(4).payload),))
    assert red.retransmission(Nack(1, 4)) is None  # from the intra frame on: more bytes than an intra frame
    red.intra_bytes = 1000
    assert answer(1, 4) == Retransmission(3, ((I, intra), (P, frame(4).payload)))  # from the intra frame
    assert red.retransmission(Nack(4, 5)) is None  # not sent yet
    assert red.retransmission(Nack(1, 2)) is None and red.superseded(Nack(1, 2))  # the intra frame 3 repairs it
    assert not red.superseded(Nack(1, 3)) and not red.superseded(Nack(4, 4))
    assert red.retransmission(Nack(3, 4), limit=10) is None  # larger than the other side accepts
    for s in range(5, 6 + RTX_HISTORY):
        red.message(frame(s), FPS)
    assert red.retransmission(Nack(4, 6)) is None  # forgotten: the oldest kept is no intra frame
    assert answer(6 + RTX_HISTORY - 1, 6 + RTX_HISTORY - 1) is not None
    red.intra_bytes = 30
    assert red.retransmission(Nack(50, 60)) is None  # a long gap: an intra frame repairs it for fewer bytes


def test_nack_and_retransmission_messages_are_checked() -> None:
    assert parse_message(Nack(3, 7).to_bytes(), None) == Nack(3, 7)
    for bad in ([3], [7, 3], [-1, 2], "x", [1, True]):
        with pytest.raises(MalformedFeedback, match="NACK"):
            parse_message(msgpack.packb({"sganc": 2, "nack": bad}), None)
    assert parse_message(Hello(MODEL, header(), 5, rtx=True).to_bytes(), None).rtx  # type: ignore[union-attr]
    assert not parse_message(Hello(MODEL, header(), 5).to_bytes(), None).rtx  # type: ignore[union-attr]
    for bad in ({"rtx": -1, "p": [[1, b"x"]]}, {"rtx": 1, "p": []}, {"rtx": 1, "p": [[3, b"x"]]},
                {"rtx": 1, "p": [[1, b"x"]] * (RTX_HISTORY + 1)}, {"rtx": 1}):
        with pytest.raises(BitstreamError, match="malformed (retransmission|control)"):
            parse_message(msgpack.packb({"sganc": 2, **bad}), None)


def test_an_intra_frame_carried_as_redundancy_resynchronizes() -> None:
    red = Redundancy(depth=1)
    msgs = [red.message(frame(s, I if s == 0 else P), FPS) for s in range(3)]
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=Clock())
    got = receive(rx, msgs[1])  # the intra frame was lost, the next message carries it
    assert got.steps == [(I, frame(0).payload), (P, frame(1).payload)] and rx.synced  # type: ignore[union-attr]


def test_gap_requests_keyframe_until_an_intra_frame_arrives() -> None:
    clock = Clock()
    rx = StreamReceiver(Hello(MODEL, header(), 0), retry_ms=200, clock=clock)
    receive(rx, pack(frame(0, I), FPS))
    receive(rx, pack(frame(1), FPS))
    clock.t += 0.3
    assert receive(rx, pack(frame(3), FPS)) is None  # 2 lost, no redundancy
    assert not rx.synced and rx.gaps == 1
    assert rx.want_keyframe() and not rx.want_keyframe()  # once, then rate-limited
    clock.t += 0.1
    assert receive(rx, pack(frame(4), FPS)) is None and not rx.want_keyframe()
    clock.t += 0.15
    assert rx.want_keyframe()  # retried after retry_ms: the first request may have been lost
    got = receive(rx, pack(frame(5, I), FPS))
    assert got.recovered_ms == pytest.approx(250)  # type: ignore[union-attr]
    assert receive(rx, pack(frame(6), FPS)) is not None
    assert rx.frames == 4 and rx.lost == 3
    receive(rx, pack(Packet(PacketType.END, 7, 7, 700), FPS))
    assert rx.ended and not rx.want_keyframe()


def test_late_and_duplicate_packets_are_dropped_without_moving_the_reader() -> None:
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=Clock())
    receive(rx, pack(frame(0, I), FPS))
    receive(rx, pack(frame(1), FPS))
    receive(rx, pack(frame(3), FPS))  # 2 overtaken by 3 (unordered channel): a gap for now
    assert isinstance(receive(rx, pack(frame(2), FPS)), Late)
    assert isinstance(receive(rx, pack(frame(3), FPS)), Late)  # a duplicate
    assert rx.late == 2 and rx.reader.last_seq == 3
    assert receive(rx, pack(frame(4, I), FPS)) is not None


def test_failures_from_before_a_resync_are_ignored() -> None:
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=Clock())
    d0 = receive(rx, pack(frame(0, I), FPS))
    rx.on_undecodable(d0.sync_id)  # type: ignore[union-attr]
    assert not rx.synced and rx.gaps == 1
    d1 = receive(rx, pack(frame(1, I), FPS))
    rx.on_undecodable(d0.sync_id)  # type: ignore[union-attr]
    assert rx.synced and d1.sync_id != d0.sync_id  # type: ignore[union-attr]


def test_keyframe_requests_are_packets_of_our_stream_and_do_not_move_the_reader() -> None:
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=Clock())
    receive(rx, pack(frame(0, I), FPS))
    req = PacketReader(FPS).unpack(rx.keyframe_request())
    assert req.type == PacketType.KEYFRAME_REQUEST and req.seq == 1
    request = parse_message(pack(Packet(PacketType.KEYFRAME_REQUEST, 500, 0, 0), FPS), rx.reader)
    assert isinstance(request, Packet) and request.seq == 500
    assert receive(rx, pack(frame(1), FPS)) is not None  # seq 1, not 1 + 256 k


def test_pacer_skips_while_the_channel_is_backed_up() -> None:
    pacer = Pacer(1000)
    assert pacer.may_send(0) and pacer.may_send(1000)
    assert not pacer.may_send(1001)
    assert pacer.skipped == 1


def test_restamped_inter_packets_stay_compact() -> None:
    reader = PacketReader(FPS)
    reader.unpack(pack(restamp(frame(0, I), 0, 0), FPS))
    p = restamp(Packet(P, 1, 1, 0, b"x" * 5), 40, 4001)  # 39 camera frames skipped
    data = pack(p, FPS)
    assert len(data) == 1 + 1 + 1 + 1 + 1 + 2 + 5
    assert reader.unpack(data) == p


def test_a_long_outage_resynchronizes_through_a_keyframe() -> None:
    """After more than 128 lost packets the 8-bit numbers look late: a run of them asks for a keyframe."""
    clock = Clock()
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=clock)
    receive(rx, pack(frame(0, I), FPS))
    receive(rx, pack(frame(1), FPS))
    clock.t += 1.0
    for seq in range(150, 158):  # 2..149 lost
        assert isinstance(receive(rx, pack(frame(seq), FPS)), Late)
    assert not rx.synced and rx.want_keyframe()
    assert receive(rx, pack(frame(160, I), FPS)) is not None  # the answer re-anchors the numbers
    assert receive(rx, pack(frame(161), FPS)) is not None and rx.synced


def test_a_new_face_intra_frame_is_an_intra_frame_to_redundancy_and_resync() -> None:
    """A new-face packet (bitstream v2, the coded person changed) sets the state on its own, like an intra frame."""
    N = PacketType.NEW_FACE
    red = Redundancy(depth=2)
    msgs = [red.message(frame(s, t), FPS) for s, t in [(0, I), (1, P), (2, N), (3, P)]]
    reader = PacketReader(FPS)
    assert [parse_message(m, reader).redundant for m in msgs][2:] == [(), ((N, frame(2).payload),)]  # type: ignore
    clock = Clock()
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=clock)
    receive(rx, msgs[0])
    assert receive(rx, pack(frame(2, P), FPS)) is None and not rx.synced  # frame 1 lost, no redundancy here
    got = receive(rx, msgs[2])  # the new-face intra frame resynchronises
    assert got is not None and got.steps == [(N, frame(2).payload)] and rx.synced  # type: ignore[union-attr]


def test_the_other_sides_max_message_size_bounds_every_message() -> None:
    """aiortc raises inside send above the size the other side's SDP announces (RFC 8841)."""
    assert peer_max_message(OFFER) == 262144  # what aiortc announces
    assert peer_max_message(OFFER.replace("a=max-message-size:262144", "a=max-message-size:1200")) == 1200
    absent = "\r\n".join(line for line in OFFER.splitlines() if not line.startswith("a=max-message-size"))
    assert peer_max_message(absent) == DEFAULT_PEER_MAX_MESSAGE == 65536
    check_message_size(1200, 1200)
    check_message_size(10**6, 0)  # 0: no limit
    with pytest.raises(MessageTooLarge, match="1201-byte frame message exceeds the other side's max message size"):
        check_message_size(1201, 1200)
    red = Redundancy(depth=2, fit=False)
    red.message(frame(0, I), FPS)
    red.message(frame(1, P, b"\x01" * 500), FPS)
    within = red.message(frame(2, P, b"\x02" * 500), FPS, limit=700)  # the redundant copy would not fit in 700
    assert within == pack(frame(2, P, b"\x02" * 500), FPS)
    assert len(red.message(frame(3, P, b"\x03" * 500), FPS, limit=1200)) <= 1200  # one copy fits, not two


def test_no_face_packets_are_shown_without_state_and_tell_of_lost_face_packets() -> None:
    """A no-face packet (SPEC.md §8.5) is a delivery with no steps (show "no face", keep the state); its sequence
    number is the next face packet's, so it exposes face packets lost before it."""
    clock = Clock()
    N = PacketType.NO_FACE
    rx = StreamReceiver(Hello(MODEL, header(), 0), clock=clock)
    lead = receive(rx, pack(Packet(N, 0, 0, 0), FPS))  # the stream starts without a face: nothing missed
    assert lead.steps == [] and lead.packet.type == N and rx.synced  # type: ignore[union-attr]
    assert not rx.want_keyframe()
    red = Redundancy(depth=2)
    sent = [Packet(I, 0, 1, 100, b"i"), Packet(P, 1, 2, 200, b"p1"), Packet(N, 2, 3, 300), Packet(N, 2, 4, 400),
            Packet(P, 2, 5, 500, b"p2"), Packet(P, 3, 6, 600, b"p3")]
    msgs = [red.message(p, FPS) for p in sent]
    assert msgs[2] == pack(sent[2], FPS) and len(msgs[2]) <= 8  # framing only, never redundancy
    got = [receive(rx, m) for m in msgs[:5]]
    assert [d.steps for d in got] == [[(I, b"i")], [(P, b"p1")], [], [], [(P, b"p2")]]  # type: ignore[union-attr]
    assert [d.packet.frame for d in got] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert rx.reader.last_seq == 2 and rx.no_face == 3 and rx.gaps == 0  # no-face packets never move the reader
    assert parse_message(msgs[5], rx.reader).redundant == ((P, b"p2"), (P, b"p1"))  # type: ignore[union-attr]
    assert receive(rx, msgs[2]) is None and rx.late == 1  # overtaken by face packet 2: late
    # face packet 3 lost, then the face leaves: the no-face packet names 4, so the loss is known at once
    clock.t += 1.0
    shown = receive(rx, pack(Packet(N, 4, 7, 700), FPS))
    assert shown.steps == [] and not rx.synced and rx.gaps == 1 and rx.lost == 1  # type: ignore[union-attr]
    assert rx.want_keyframe()  # the sender codes the returning face as an intra frame
    back = receive(rx, pack(Packet(I, 4, 9, 900, b"i2"), FPS))
    assert back.steps == [(I, b"i2")] and rx.synced  # type: ignore[union-attr]
