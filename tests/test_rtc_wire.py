"""The one wire-cost formula: SCTP DATA chunk framing, fragmentation at aiortc's chunk size, 77 B per datagram."""

from __future__ import annotations

from aiortc import rtcsctptransport

from sganc_stream.rtc.wire import CHUNK_DATA, DATAGRAM_OVERHEAD, sctp_bytes, sctp_chunks, wire_bytes


def test_small_message_is_chunk_header_padding_and_datagram() -> None:
    assert sctp_bytes(1) == 20  # 16 + 1 → padded to 20
    assert sctp_bytes(4) == 20
    assert sctp_bytes(5) == 24
    assert sctp_bytes(0) == 16 and sctp_chunks(0) == 1
    assert wire_bytes(5) == 24 + DATAGRAM_OVERHEAD == 24 + 77


def test_large_messages_fragment_into_chunks_of_aiortc_size() -> None:
    assert CHUNK_DATA == rtcsctptransport.USERDATA_MAX_LENGTH  # the sender we ship fragments exactly there
    one = wire_bytes(CHUNK_DATA)
    assert one == 16 + CHUNK_DATA + DATAGRAM_OVERHEAD  # CHUNK_DATA is a multiple of 4
    assert sctp_chunks(CHUNK_DATA + 1) == 2
    assert wire_bytes(CHUNK_DATA + 1) == one + 20 + DATAGRAM_OVERHEAD
    assert wire_bytes(3 * CHUNK_DATA) == 3 * one
