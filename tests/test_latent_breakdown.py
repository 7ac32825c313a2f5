"""latent/breakdown.py: the bits of a stream split by packet type, part, stage group and row, summing exactly."""

import numpy as np
import pytest

from sganc_stream.bitstream.container import decode_container
from sganc_stream.errors import BitstreamError, ModelMismatchError
from sganc_stream.latent.breakdown import PARTS, apportion, bit_breakdown
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.sequence import encode_sequence
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.rtc.wire import wire_bytes

from conftest import TINY_ROWS, TINY_WIDTH


def _stream(model, params, frames=23, no_face=(), new_faces=()):
    latents = synthetic_latents("walk", frames, TINY_ROWS, TINY_WIDTH, seed=11)
    for i in no_face:
        latents[i] = np.nan
    return encode_sequence(model, latents, params, 25.0, new_faces=new_faces)


def test_apportion_sums_exactly_and_follows_weights():
    out = apportion(10, np.array([1.0, 1.0, 1.0]))
    assert out.tolist() == [4, 3, 3]  # the remainder goes to the lowest index among equal remainders
    assert apportion(7, np.array([0.0, 3.0, 1.0])).tolist() == [0, 5, 2]
    assert apportion(5, np.zeros(2)).tolist() == [3, 2]  # no information anywhere: even split
    rng = np.random.default_rng(0)
    w = rng.exponential(size=1000)
    for total in (0, 1, 999, 123457):
        got = apportion(total, w)
        assert got.sum() == total and (got >= 0).all()
        assert np.abs(got - w * total / w.sum()).max() < 1  # never more than one bit from the exact share
    with pytest.raises(ValueError):
        apportion(3, np.zeros(0))


def test_sums_match_file_and_packets_exactly(tiny_codec):
    res = _stream(tiny_codec, StreamParams("open", 5, 1), no_face=(3, 4), new_faces=(15,))
    c = decode_container(res.data)
    b = bit_breakdown(c, tiny_codec, transport=True)
    d = b.to_dict()
    assert d["total_bits"] == 8 * len(res.data)
    # file = header + records + end; record = payload + framing
    assert b.header_bits + b.end_bits + sum(t.record_bits for t in b.by_type.values()) == 8 * len(res.data)
    assert b.header_bits == 8 * c.header_bytes
    assert b.payload_bits == 8 * sum(len(p.payload) for p in c.packets)
    assert b.framing_bits == 8 * (sum(c.record_bytes) - sum(len(p.payload) for p in c.packets))
    types = {p.type.label for p in c.packets}
    assert set(b.by_type) == types == {"intra", "inter", "inter+residual", "no_face", "new_face"}
    assert d["by_packet_type"]["no_face"]["payload_bits"] == 0 and d["by_packet_type"]["no_face"]["packets"] == 2
    for label, t in b.by_type.items():
        got = [(p, r) for p, r in zip(c.packets, c.record_bytes) if p.type.label == label]
        assert t.packets == len(got)
        assert t.payload_bits == 8 * sum(len(p.payload) for p, _ in got)
        assert t.transport_bits == 8 * sum(wire_bytes(r) - r for _, r in got)
    assert d["transport"]["bits"] == 8 * sum(wire_bytes(r) - r for r in c.record_bytes)
    assert d["transport"]["wire_bits"] == 8 * sum(wire_bytes(r) for r in c.record_bytes)
    # parts, groups and rows each sum to the face packets' payloads
    assert sum(v["bits"] for v in d["by_part"].values()) == b.payload_bits
    assert sum(g["bits"] for g in d["by_group"]) == b.payload_bits
    assert sum(r["bits"] for r in d["by_row"]) == b.payload_bits
    assert len(d["by_row"]) == TINY_ROWS and [g["rows"] for g in d["by_group"]] == [list(g) for g in tiny_codec.groups]
    part = d["by_part"]
    assert part["intra"]["bits"] == b.by_type["intra"].payload_bits
    assert part["new_face"]["bits"] == b.by_type["new_face"].payload_bits
    assert part["difference"]["bits"] + part["residual"]["bits"] == (b.by_type["inter"].payload_bits
                                                                    + b.by_type["inter+residual"].payload_bits)
    assert part["residual"]["bits"] > 0
    # the attribution follows the coder's ideal bits (payload within a few words of the information content)
    ideal = sum(p["ideal_bits"] for p in part.values())
    assert ideal == pytest.approx(sum(res.ideal_bits))
    assert abs(b.payload_bits - ideal) <= 64 * sum(1 for p in c.packets if p.type.is_frame)


def test_per_packet_attribution_is_exact(tiny_codec):
    """One packet at a time: its row bits are integers summing to its payload bits, split by each channel's
    information content."""
    res = _stream(tiny_codec, StreamParams("open", 3, 0), frames=7)
    c = decode_container(res.data)
    for k in range(1, len(c.packets) + 1):
        sub = type(c)(c.header, c.packets[:k], c.record_bytes[:k], c.header_bytes, c.total_bytes)
        prev = type(c)(c.header, c.packets[:k - 1], c.record_bytes[:k - 1], c.header_bytes, c.total_bytes)
        rows = sum(bit_breakdown(sub, tiny_codec).rows_bits.values()) - sum(bit_breakdown(prev, tiny_codec).rows_bits.values())
        assert rows.dtype == np.int64 and rows.sum() == 8 * len(c.packets[k - 1].payload)


def test_without_model_only_packet_types(tiny_codec):
    res = _stream(tiny_codec, StreamParams("closed", 0, 1))
    b = bit_breakdown(decode_container(res.data))
    d = b.to_dict()
    assert "by_row" not in d and "transport" not in d
    assert d["container"]["header_bits"] + d["container"]["end_bits"] + d["payload_bits"] + d["framing_bits"] == d["total_bits"]
    assert sum(v["share"] for v in d["by_packet_type"].values()) + d["container"]["share"] == pytest.approx(1.0)


def test_other_model_and_corrupt_payload_are_errors(tiny_codec):
    res = _stream(tiny_codec, StreamParams("open", 5, 1))
    c = decode_container(res.data)
    other = type(tiny_codec)(**{**tiny_codec.__dict__, "model_id": "0" * 64})
    with pytest.raises(ModelMismatchError):
        bit_breakdown(c, other)
    bad = c.packets[1]
    flipped = bytes([bad.payload[0] ^ 0x55]) + bad.payload[1:]
    c.packets[1] = type(bad)(bad.type, bad.seq, bad.frame, bad.timestamp_ms, flipped)
    with pytest.raises(BitstreamError):
        bit_breakdown(c, tiny_codec)


def test_parts_constant_matches_what_is_reported(tiny_codec):
    res = _stream(tiny_codec, StreamParams("intra", 0, 2), frames=4)
    d = bit_breakdown(decode_container(res.data), tiny_codec).to_dict()
    assert list(d["by_part"]) == list(PARTS)
    assert d["by_part"]["intra"]["bits"] == d["payload_bits"] and d["by_part"]["difference"]["bits"] == 0


def test_breakdowns_add_up(tiny_codec):
    a = _stream(tiny_codec, StreamParams("open", 5, 1), frames=12)
    b = _stream(tiny_codec, StreamParams("open", 5, 1), frames=9, no_face=(2,))
    ba, bb = (bit_breakdown(decode_container(r.data), tiny_codec, transport=True) for r in (a, b))
    pooled = (ba + bb).to_dict()
    assert pooled["total_bits"] == 8 * (len(a.data) + len(b.data)) and pooled["frames"] == 21
    assert pooled["kbps"] == pytest.approx(8 * (len(a.data) + len(b.data)) / (21 / 25) / 1000)
    assert pooled["by_packet_type"]["no_face"]["packets"] == 1
    assert [r["bits"] for r in pooled["by_row"]] == [x["bits"] + y["bits"] for x, y in
                                                     zip(ba.to_dict()["by_row"], bb.to_dict()["by_row"])]
    with pytest.raises(ValueError):
        ba + bit_breakdown(decode_container(a.data), tiny_codec)  # with and without transport
