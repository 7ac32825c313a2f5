import pytest

from sganc_stream.bitstream.container import MAGIC, StreamHeader, decode_container, encode_container, read_container, write_container
from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.errors import BitstreamError, InputError

HEADER = StreamHeader("ab" * 32, 18, 512, "open", 10, 1.0, 25.0, 4, 0)
PACKETS = [Packet(PacketType.INTRA, 0, 0, 0, b"\x00" * 400)] + [Packet(PacketType.INTER, i, i, 40 * i, bytes([i]) * 32) for i in range(1, 4)]


def test_round_trip(tmp_path):
    size = write_container(tmp_path / "a.sgnc", HEADER, PACKETS)
    c = read_container(tmp_path / "a.sgnc")
    assert c.header == HEADER and c.packets == PACKETS and c.total_bytes == size
    assert c.header_bytes + sum(c.record_bytes) + 12 >= size > c.header_bytes + sum(c.record_bytes)


def test_every_truncation_is_reported():
    data = encode_container(HEADER, PACKETS)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_container(data[:n])


def test_every_single_byte_corruption_is_reported():
    data = encode_container(HEADER, PACKETS)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x21
        with pytest.raises(BitstreamError):
            decode_container(bytes(bad))


def test_magic_version_and_header_errors():
    data = encode_container(HEADER, PACKETS)
    with pytest.raises(BitstreamError, match="not an .sgnc"):
        decode_container(b"RIFF" + data[4:])
    with pytest.raises(BitstreamError, match="unknown bitstream version 7"):
        decode_container(MAGIC + b"\x07" + data[5:])
    with pytest.raises(BitstreamError, match="out of range"):
        decode_container(encode_container(StreamHeader("ab" * 32, 18, 512, "sideways", 10, 1.0, 25.0, 0, 0), []))


def test_unwritable_destination(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_container(tmp_path / "missing" / "x.sgnc", HEADER, PACKETS)
    assert list(tmp_path.iterdir()) == []
