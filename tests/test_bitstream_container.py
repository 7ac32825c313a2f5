import bisect
import itertools
import warnings
from dataclasses import replace

import pytest

from sganc_stream.bitstream.container import MAGIC, StreamHeader, decode_container, encode_container, read_container, write_container
from sganc_stream.bitstream.packet import Packet, PacketType
from sganc_stream.errors import BitstreamError, InputError, InputWarning

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


def test_a_file_cut_short_gives_its_complete_packets_when_asked() -> None:
    """partial=True (what decode and inspect use): every cut after the first whole packet gives exactly the packets
    whose records are whole, complete=False and one warning naming held / declared frames; a cut before it, a
    version 1 file (no check values in its payloads) and anything but a cut stay errors."""
    data = encode_container(V2_HEADER, V2_PACKETS)
    whole = decode_container(data)
    assert whole.complete and decode_container(data, partial=True) == whole
    ends = list(itertools.accumulate(whole.record_bytes, initial=whole.header_bytes))
    for n in range(len(data)):
        if n < whole.header_bytes:
            with pytest.raises(BitstreamError, match="not an .sgnc|truncated .header incomplete"):
                decode_container(data[:n], partial=True)
            continue
        held = bisect.bisect_right(ends, n) - 1
        if held == 0:  # nothing to decode: an error, as without partial
            with pytest.raises(BitstreamError, match="truncated .no end packet after 0 frames"):
                decode_container(data[:n], partial=True)
            continue
        with pytest.warns(InputWarning) as caught:
            c = decode_container(data[:n], "cut.sgnc", partial=True)
        assert not c.complete and c.packets == V2_PACKETS[:held] and c.record_bytes == whole.record_bytes[:held]
        assert c.header == V2_HEADER and c.total_bytes == n and len(caught) == 1 and c.source == "cut.sgnc"
        assert str(caught[0].message) == (f"cut.sgnc ended early: no end packet; it holds {held} complete frames of "
                                          f"the {len(V2_PACKETS)} its header declares (the file's checksum cannot be "
                                          "checked)")
    v1 = encode_container(replace(HEADER, version=1), PACKETS)
    with pytest.raises(BitstreamError, match="truncated .no end packet after 2 frames"):
        decode_container(v1[:len(v1) - 60], partial=True)
    bad = bytearray(data)
    bad[-3] ^= 0x21  # in the checksum: the file is whole, so it is checked
    with pytest.raises(BitstreamError, match="checksum mismatch"):
        decode_container(bytes(bad), partial=True)


def test_a_corruption_is_never_silent_when_cut_files_are_accepted() -> None:
    """With partial=True a corrupted byte may read as a cut (a length field that runs past the end), but then it
    warns; it never passes as a whole file."""
    data = encode_container(V2_HEADER, V2_PACKETS)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x21
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                c = decode_container(bytes(bad), partial=True)
            except BitstreamError:
                continue
        assert not c.complete and [w.category for w in caught] == [InputWarning], i


def test_more_packets_than_the_header_declares_is_an_error() -> None:
    data = encode_container(replace(V2_HEADER, frames=3), V2_PACKETS)
    with pytest.raises(BitstreamError, match="header says 3 frames, file holds more"):
        decode_container(data, partial=True)


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
    with pytest.raises(BitstreamError, match="unknown bitstream version 7 .this build reads versions 1, 2"):
        decode_container(MAGIC + b"\x07" + data[5:])
    with pytest.raises(BitstreamError, match="^input: malformed header: field out of range"):
        decode_container(encode_container(StreamHeader("ab" * 32, 18, 512, "sideways", 10, 1.0, 25.0, 0, 0), []))


def test_unwritable_destination(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_container(tmp_path / "missing" / "x.sgnc", HEADER, PACKETS)
    assert list(tmp_path.iterdir()) == []


V2_PACKETS = [Packet(PacketType.NO_FACE, 0, 0, 0), Packet(PacketType.NO_FACE, 0, 1, 40),  # the lead-in
              Packet(PacketType.INTRA, 0, 2, 80, b"\x00" * 40), Packet(PacketType.INTER, 1, 3, 120, b"\x01" * 8),
              Packet(PacketType.NO_FACE, 2, 4, 160), Packet(PacketType.NEW_FACE, 2, 5, 200, b"\x02" * 40),
              Packet(PacketType.INTER_RESIDUAL, 3, 6, 240, b"\x03" * 12)]
V2_HEADER = StreamHeader("ab" * 32, 18, 512, "open", 10, 1.0, 25.0, len(V2_PACKETS), 0)


def test_v2_holds_one_packet_per_source_frame() -> None:
    data = encode_container(V2_HEADER, V2_PACKETS)
    assert data[4] == 2
    c = decode_container(data)
    assert c.header == V2_HEADER and c.header.version == 2 and c.packets == V2_PACKETS
    assert c.record_bytes[0] == 7  # a no-face packet: framing only


@pytest.mark.parametrize("bad,message", [
    ([*V2_PACKETS[:4], Packet(PacketType.NO_FACE, 1, 4, 160), *V2_PACKETS[5:]], "sequence number 1, expected 2"),
    ([*V2_PACKETS[:4], Packet(PacketType.NO_FACE, 2, 9, 160), *V2_PACKETS[5:]], "frame index 9"),
    ([*V2_PACKETS[:4], Packet(PacketType.KEYFRAME_REQUEST, 2, 4, 160), *V2_PACKETS[5:]], "unexpected keyframe_request"),
])
def test_v2_numbering_and_types_are_checked(bad: list[Packet], message: str) -> None:
    with pytest.raises(BitstreamError, match=message):
        decode_container(encode_container(V2_HEADER, bad))


def test_version_1_files_still_read_and_hold_face_packets_only() -> None:
    v1 = StreamHeader("ab" * 32, 18, 512, "open", 10, 1.0, 25.0, 4, 0, version=1)
    c = decode_container(encode_container(v1, PACKETS))
    assert c.header.version == 1 and c.packets == PACKETS
    with pytest.raises(BitstreamError, match="unexpected no_face packet in a version 1 file"):
        decode_container(encode_container(replace(V2_HEADER, version=1), V2_PACKETS))


def test_unknown_header_field_is_an_error() -> None:
    with pytest.raises(BitstreamError, match="unknown field"):
        StreamHeader.from_map({**HEADER.to_map(), "extra": 1})


def test_version_3_names_the_residual_table_and_only_it_may() -> None:
    v3 = replace(HEADER, residual="empirical", version=3)
    c = decode_container(encode_container(v3, PACKETS))
    assert c.header == v3 and c.header.residual == "empirical" and c.packets == PACKETS
    assert v3.to_map()["residual"] == "empirical" and "residual" not in HEADER.to_map()  # v2 maps are unchanged
    assert decode_container(encode_container(replace(v3, residual="irwin_hall"), PACKETS)).header.residual == "irwin_hall"
    with pytest.raises(BitstreamError, match="missing field"):
        StreamHeader.from_map(HEADER.to_map(), version=3)
    with pytest.raises(BitstreamError, match="unknown field"):  # a v2 (or call protocol 2) header cannot carry it
        StreamHeader.from_map(v3.to_map(), version=2)
    with pytest.raises(BitstreamError, match="out of range"):
        StreamHeader.from_map({**v3.to_map(), "residual": "laplace"}, version=3)
    with pytest.raises(BitstreamError, match="has type int"):
        StreamHeader.from_map({**v3.to_map(), "residual": 1}, version=3)
    with pytest.raises(ValueError, match="bitstream version 2 cannot name the empirical residual table"):
        replace(HEADER, residual="empirical").to_map()


def test_version_5_names_context_and_decimation_and_only_it_may() -> None:
    v5 = replace(HEADER, residual="empirical", context="temporal", decimation=3, version=5)
    c = decode_container(encode_container(v5, PACKETS))
    assert c.header == v5 and c.packets == PACKETS
    assert v5.to_map()["context"] == "temporal" and v5.to_map()["decimation"] == 3 and "steps" not in v5.to_map()
    assert "context" not in HEADER.to_map() and "decimation" not in HEADER.to_map()  # v2 maps are unchanged
    assert decode_container(encode_container(replace(v5, context="factorized"), PACKETS)).header.decimation == 3
    with pytest.raises(BitstreamError, match="missing field"):
        StreamHeader.from_map(replace(v5, context="factorized", decimation=1, version=3).to_map(), version=5)
    with pytest.raises(BitstreamError, match="unknown field"):  # a v3 or v4 header cannot carry them
        StreamHeader.from_map(v5.to_map(), version=3)
    for bad in ({"context": "cabac"}, {"decimation": 0}, {"decimation": 17}):
        with pytest.raises(BitstreamError, match="out of range"):
            StreamHeader.from_map({**v5.to_map(), **bad}, version=5)
    with pytest.raises(BitstreamError, match="has type bool"):
        StreamHeader.from_map({**v5.to_map(), "decimation": True}, version=5)
    with pytest.raises(ValueError, match="bitstream version 3 cannot code with temporal context or decimation"):
        replace(v5, version=3).to_map()
