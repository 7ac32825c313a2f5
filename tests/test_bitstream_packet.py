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
