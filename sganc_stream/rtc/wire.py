"""Wire cost of data-channel messages: the one formula the live call's stats and every benchmark use.

One message of ``n`` bytes (a packet, or a live-call frame message) travels as SCTP DATA chunks (RFC 9260 §3.3.1)
of at most ``CHUNK_DATA`` bytes of user data each, one chunk per SCTP packet (aiortc, the sender this project
ships, does not bundle chunks), each SCTP packet in one DTLS record in one UDP datagram:

- channel bytes (the data channel's framing): per chunk a 16-byte DATA chunk header plus its user data padded to
  a multiple of 4 bytes;
- wire bytes (IPv4): channel bytes plus, per datagram, ``DATAGRAM_OVERHEAD`` = SCTP common header 12 + DTLS 1.2
  record header 13 + AES-GCM explicit nonce 8 and tag 16 (RFC 5288) + UDP 8 + IPv4 20 = 77 bytes.

``CHUNK_DATA`` = 1160 is aiortc's ``USERDATA_MAX_LENGTH`` (an SCTP packet of at most 1189 bytes, so that the
datagram fits the IPv6 minimum MTU; libwebrtc's limit is similar). Not counted: SACKs and FORWARD-TSNs (the reverse
direction), ICE consent checks, SCTP heartbeats, and the handshakes.
"""

from __future__ import annotations

SCTP_DATA_HEADER = 16
DATAGRAM_OVERHEAD = 12 + 13 + 8 + 16 + 8 + 20  # SCTP common + DTLS record + GCM nonce/tag + UDP + IPv4
CHUNK_DATA = 1160


def pad4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (SCTP chunk padding)."""
    return (n + 3) // 4 * 4


def sctp_chunks(n: int) -> int:
    """DATA chunks (and so datagrams) that carry one ``n``-byte message; an empty message still takes one."""
    return max(1, -(-n // CHUNK_DATA))


def sctp_bytes(n: int) -> int:
    """Channel bytes of one ``n``-byte message: its DATA chunks with headers and padding (see the module doc)."""
    chunks = sctp_chunks(n)
    last = n - (chunks - 1) * CHUNK_DATA
    return (chunks - 1) * (SCTP_DATA_HEADER + CHUNK_DATA) + SCTP_DATA_HEADER + pad4(last)


def wire_bytes(n: int) -> int:
    """Estimated IPv4 bytes on the wire for one ``n``-byte message (see the module doc)."""
    return sctp_bytes(n) + sctp_chunks(n) * DATAGRAM_OVERHEAD
