import msgpack
import pytest

from sganc_stream.bitstream.packet import Packet, PacketReader, PacketType, pack
from sganc_stream.errors import BitstreamError


def test_round_trip_across_sequence_wrap():
    fps = 25.0
    packets = [Packet(PacketType.INTRA, 0, 0, 0, b"i" * 40)]
    for s in range(1, 700):
        packets.append(Packet(PacketType.INTER if s % 10 else PacketType.INTER_RESIDUAL, s, s + s // 100, round(s * 40) + s % 3, b"x" * 12))
    reader = PacketReader(fps)
    assert [reader.unpack(pack(p, fps)) for p in packets] == packets


def test_inter_framing_within_eight_bytes():
    payload = b"\x01" * 64
    p = Packet(PacketType.INTER, 5000, 5000, 200_000 + 3, payload)
    assert len(pack(p, 25.0)) - len(payload) <= 8


def test_loss_of_packets_keeps_frame_indices():
    fps = 30.0
    sent = [Packet(PacketType.INTRA, 0, 0, 0, b"a")] + [Packet(PacketType.INTER, s, s, round(s * 1000 / 30), b"b") for s in range(1, 300)]
    reader = PacketReader(fps)
    got = [reader.unpack(pack(p, fps)) for i, p in enumerate(sent) if i % 7 != 3]
    assert all(g == sent[g.seq] for g in got)


@pytest.mark.parametrize(
    "obj,msg",
    [([1, 2, 3], "5-field"), ([9, 0, 0, 0, b""], "type"), ([0, -1, 0, 0, b""], "sequence"), ([0, 0, 0, 0, 1.5], "payload"),
     ([0, 0, 0, 0, "text"], "malformed"), ({"a": 1}, "malformed")],
)
def test_malformed_records(obj, msg):
    with pytest.raises(BitstreamError, match=msg):
        PacketReader(25.0).unpack(msgpack.packb(obj))


def test_garbage_and_inter_before_intra():
    with pytest.raises(BitstreamError):
        PacketReader(25.0).unpack(b"\xc1\xff")
    with pytest.raises(BitstreamError, match="before any intra"):
        PacketReader(25.0).unpack(pack(Packet(PacketType.INTER, 3, 3, 120, b"x"), 25.0))


def test_no_face_packets_do_not_move_the_sequence_unwrapping() -> None:
    """A no-face packet names the next face packet's number without using it (and may come before any intra)."""
    fps = 25.0
    reader = PacketReader(fps)
    sent = [Packet(PacketType.NO_FACE, 0, 0, 0), Packet(PacketType.INTRA, 0, 1, 40, b"i")]
    sent += [Packet(PacketType.NO_FACE, 1, f, 40 * f) for f in range(2, 300)]  # a long faceless stretch
    sent += [Packet(PacketType.INTER, 1, 300, 12000, b"x"), Packet(PacketType.NEW_FACE, 2, 301, 12040, b"n")]
    assert [reader.unpack(pack(p, fps)) for p in sent] == sent
    assert PacketType.NO_FACE.is_picture and not PacketType.NO_FACE.is_frame
    assert PacketType.NEW_FACE.is_frame and PacketType.NEW_FACE.is_intra and PacketType.NEW_FACE.label == "new_face"
