"""Where the bits of a stream go: one breakdown by packet type, coded part, stage group and W+ row.

The one function that splits a stream's cost (``sganc-stream inspect --json`` and ``benchmarks/bitrate_vs_g.py``
both call :func:`bit_breakdown`). Every figure is in bits, and the parts add up exactly:

* file = container header (magic, version byte, header map) + Σ packet records + the END packet (CRC-32);
* packet record = payload (the rANS words) + framing (the msgpack array around it: type, seq, frame, ts, bin
  header; bitstream_spec/SPEC.md §3);
* payload of a face packet = Σ over its coded parts (intra values; latent difference; residual) = Σ over W+ rows.

The format codes a packet's parts in ONE rANS stream (entropy.rans), so a part or a row has no exact length of its
own. Its share is **attributed**: each channel's information content under the table that coded it (``−log2 p`` with
p = freq / 2^16, plus 32 raw bits per escape: ``CodingTable.channel_bits``) weighs how the packet's payload bits
are split, and the bits are integers by the largest-remainder rule (ties to the lower channel index), so a packet's
per-channel bits sum exactly to its payload bits. The check value (v2), the step choice (v4) and the coder's tail
word are spread in proportion; ``ideal_bits`` keeps the unscaled information content, so ``payload − ideal`` is what the coder and the
check value cost on top. Proxy channel ``c`` belongs to W+ row ``c // width`` (T acts on each row; latent.model).

Optionally the transport: each packet record sent as one data-channel message, costed by the call's one formula
(``rtc.wire.wire_bytes``: SCTP/DTLS/UDP/IPv4); an estimate, not part of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sganc_stream.bitstream.container import Container
from sganc_stream.bitstream.packet import PacketType, naming_packet
from sganc_stream.latent.codec import LatentStreamDecoder
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import stream_params
from sganc_stream.rtc.wire import wire_bytes

PARTS = ("intra", "new_face", "difference", "residual")  # what a face packet's payload codes, by packet type


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` (int ≥ 0) into non-negative integers proportional to ``weights`` (n,) float ≥ 0 that sum to
    exactly ``total``: floors, then one more to the largest remainders (ties: lower index first). All-zero weights
    split evenly. Returns (n,) int64."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        if total:
            raise ValueError("cannot apportion a non-zero total over nothing")
        return np.zeros(0, dtype=np.int64)
    if not w.sum() > 0:
        w = np.ones_like(w)
    exact = w * (total / w.sum())
    out = np.floor(exact).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        order = np.argsort(-(exact - out), kind="stable")
        out[order[:short]] += 1
    return out


@dataclass
class TypeTally:
    """Packets of one type: how many, their payload bits and framing bits (records = payload + framing)."""

    packets: int = 0
    payload_bits: int = 0
    framing_bits: int = 0
    transport_bits: int = 0  # wire estimate minus the record, when asked for

    @property
    def record_bits(self) -> int:
        return self.payload_bits + self.framing_bits

    def __add__(self, other: TypeTally) -> TypeTally:
        return TypeTally(self.packets + other.packets, self.payload_bits + other.payload_bits,
                         self.framing_bits + other.framing_bits, self.transport_bits + other.transport_bits)


@dataclass
class BitBreakdown:
    """A stream's bits, split exactly (see the module doc). ``rows_bits[part]`` is (rows,) int64 attributed bits;
    ``ideal_bits[part]`` the unscaled information content (float). Breakdowns of streams with the same groups add
    up (``a + b``: the pooled figures of several clips)."""

    total_bits: int  # 8 × file size
    header_bits: int  # magic + version byte + header map
    end_bits: int  # the END packet record (CRC-32); in a file cut short, its partial last record's bytes
    frames: int
    seconds: float  # frames / fps, so pooled streams of different frame rates give the right kbps
    groups: list[tuple[int, int]]  # stage groups, half-open W+ row ranges
    by_type: dict[str, TypeTally] = field(default_factory=dict)
    rows_bits: dict[str, np.ndarray] = field(default_factory=dict)
    ideal_bits: dict[str, float] = field(default_factory=dict)
    transport: bool = False

    def __add__(self, other: BitBreakdown) -> BitBreakdown:
        if self.groups != other.groups or self.transport != other.transport or set(self.rows_bits) != set(other.rows_bits):
            raise ValueError("cannot add breakdowns of different row layouts or with and without transport")
        return BitBreakdown(
            self.total_bits + other.total_bits, self.header_bits + other.header_bits, self.end_bits + other.end_bits,
            self.frames + other.frames, self.seconds + other.seconds, self.groups,
            {k: self.by_type.get(k, TypeTally()) + other.by_type.get(k, TypeTally())
             for k in {**self.by_type, **other.by_type}},
            {p: self.rows_bits[p] + other.rows_bits[p] for p in self.rows_bits},
            {p: self.ideal_bits[p] + other.ideal_bits[p] for p in self.ideal_bits}, self.transport)

    @property
    def payload_bits(self) -> int:
        return sum(t.payload_bits for t in self.by_type.values())

    @property
    def framing_bits(self) -> int:
        return sum(t.framing_bits for t in self.by_type.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bits and share of the file for each split; kbps at the stream's frame rate."""
        total = self.total_bits
        share = lambda b: b / total if total else 0.0  # noqa: E731
        kbps = lambda b: b / self.seconds / 1000 if self.seconds else 0.0  # noqa: E731
        out: dict[str, Any] = {
            "attribution": "payload bits of each packet split over its channels in proportion to −log2 p under the "
                           "table that coded them (+32 per escape), integers by largest remainder: exact sums",
            "total_bits": total, "frames": self.frames,
            "bits_per_frame": total / self.frames if self.frames else None, "kbps": kbps(total),
            "container": {"header_bits": self.header_bits, "end_bits": self.end_bits,
                          "share": share(self.header_bits + self.end_bits)},
            "payload_bits": self.payload_bits, "payload_share": share(self.payload_bits),
            "framing_bits": self.framing_bits, "framing_share": share(self.framing_bits),
            "by_packet_type": {k: {"packets": t.packets, "payload_bits": t.payload_bits, "framing_bits": t.framing_bits,
                                   "record_bits": t.record_bits, "share": share(t.record_bits),
                                   "bits_per_packet": t.record_bits / t.packets if t.packets else None,
                                   **({"transport_bits": t.transport_bits} if self.transport else {})}
                               for k, t in self.by_type.items()},
        }
        if self.rows_bits:
            rows = sum(self.rows_bits.values())
            out["by_part"] = {p: {"bits": int(b.sum()), "share": share(int(b.sum())), "ideal_bits": self.ideal_bits[p]}
                              for p, b in self.rows_bits.items()}
            out["by_group"] = [{"rows": [a, b], "bits": int(rows[a:b].sum()), "share": share(int(rows[a:b].sum())),
                                "by_part": {p: int(v[a:b].sum()) for p, v in self.rows_bits.items()}}
                               for a, b in self.groups]
            out["by_row"] = [{"row": i, "bits": int(rows[i]), "share": share(int(rows[i])),
                              "by_part": {p: int(v[i]) for p, v in self.rows_bits.items()}} for i in range(len(rows))]
        if self.transport:
            tb = sum(t.transport_bits for t in self.by_type.values())
            wire = tb + self.payload_bits + self.framing_bits  # a call sends the packets, not the file's header and end
            out["transport"] = {"bits": tb, "kbps": kbps(tb), "wire_bits": wire, "wire_kbps": kbps(wire),
                                "formula": "rtc.wire.wire_bytes per packet record sent as one data-channel message"}
        return out


def bit_breakdown(container: Container, model: LatentCodecModel | None = None, *, transport: bool = False) -> BitBreakdown:
    """Split a decoded container's bits by packet type, and (with ``model``, the stream's own latent codec) by coded
    part, stage group and W+ row; ``transport`` adds the data-channel wire estimate per packet type.

    Without a model, only packet types, framing and the container are split. Raises ModelMismatchError when
    ``model`` is not the stream's, BitstreamError for a payload that does not decode.
    """
    h = container.header
    n = len(container.packets)  # = h.frames, unless the file was cut short (read with partial=True)
    b = BitBreakdown(8 * container.total_bytes, 8 * container.header_bytes,
                     8 * (container.total_bytes - container.header_bytes - sum(container.record_bytes)),
                     n, n / h.fps, list(model.groups) if model is not None else [], transport=transport)
    decoder = LatentStreamDecoder(model, stream_params(model, h), h.version) if model is not None else None
    if model is not None:
        b.rows_bits = {p: np.zeros(model.rows, dtype=np.int64) for p in PARTS}
        b.ideal_bits = {p: 0.0 for p in PARTS}
    for packet, record in zip(container.packets, container.record_bytes):
        t = b.by_type.setdefault(packet.type.label, TypeTally())
        payload = 8 * len(packet.payload)
        t.packets += 1
        t.payload_bits += payload
        t.framing_bits += 8 * record - payload
        if transport:
            t.transport_bits += 8 * (wire_bytes(record) - record)
        if decoder is None or not packet.type.is_frame:
            continue
        with naming_packet(packet, container.source):
            parts = decoder.step(packet.type, packet.payload)
        names = (["new_face" if packet.type == PacketType.NEW_FACE else "intra"] if packet.type.is_intra
                 else ["difference", "residual"][: len(parts)])
        info = np.stack([table.channel_bits(values) for values, table in parts])  # (parts, C)
        bits = apportion(payload, info.reshape(-1)).reshape(len(parts), model.rows, model.width).sum(axis=2)
        for name, row_bits, part_info in zip(names, bits, info):
            b.rows_bits[name] += row_bits
            b.ideal_bits[name] += float(part_info.sum())
    return b
