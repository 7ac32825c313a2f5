"""Independent decoder for sganc-stream bitstreams v1 to v6, written from SPEC.md alone.

It uses numpy, msgpack and safetensors' numpy reader only: no sganc_stream and no constriction code, so
agreement with the library on the conformance vectors checks the specification, not the implementation
against itself. Slow (pure Python rANS) and meant for conformance, not production.

    python bitstream_spec/reference_decoder.py MODEL.safetensors IN.sgnc STATES.npy DECODED.npy
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from fractions import Fraction
from math import comb, factorial

import msgpack
import numpy as np
from safetensors import safe_open

P = 24  # model precision (bits)
TOTAL16 = 1 << 16


class Model:
    """Codec tables, flows and model id read from a bundle (SPEC §5)."""

    def __init__(self, path: str) -> None:
        with safe_open(path, framework="np") as f:
            meta = json.loads(f.metadata()["sganc"])
            self.tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta["version"] not in (1, 2, 3):
            raise ValueError(f"unsupported model file version {meta['version']}")
        for name, entry in (meta.get("packed", {}) if meta["version"] >= 2 else {}).items():
            form = entry.get("form") if meta["version"] == 3 else None
            self.tensors[name] = (unpack_grid8 if form == "grid8" else unpack)(self.tensors[name], entry["dtype"], entry["shape"])
        cfg = {k: v for k, v in meta.items() if k not in ("format", "version", "packed")}
        codec = cfg["codec"]
        self.rows, self.width = codec["rows"], codec["width"]
        self.groups = [tuple(g) for g in codec["groups"]]
        self.steps = codec["steps"]
        self.couplings = codec["flow"]["couplings"]
        self.model_id = self._hash(cfg)

    def _hash(self, cfg: dict) -> str:
        dtypes = {np.dtype("float16"): "torch.float16", np.dtype("float32"): "torch.float32", np.dtype("int32"): "torch.int32", np.dtype("uint16"): "torch.uint16",
                  np.dtype("int64"): "torch.int64", np.dtype("uint8"): "torch.uint8", np.dtype("bool"): "torch.bool"}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode())
        for name in sorted(self.tensors):
            t = np.ascontiguousarray(self.tensors[name])
            h.update(name.encode() + b"\0" + dtypes[t.dtype].encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
            h.update(t.astype(t.dtype.newbyteorder("<")).tobytes())
        return h.hexdigest()

    def table(self, kind: str, step_index: int) -> tuple[np.ndarray, np.ndarray]:
        p = f"codec.tables.{kind}.{step_index}."
        return self.tensors[p + "offsets"].astype(np.int64), self.tensors[p + "freqs"].astype(np.int64)

    def context(self, step_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SPEC §4.3 (v5): channel classes (C,), row offsets (3·S,) and row frequencies (3·S, L) of a step preset."""
        p = f"codec.context.{step_index}."
        return tuple(self.tensors[p + k].astype(np.int64) for k in ("classes", "offsets", "freqs"))  # type: ignore[return-value]

    def inverse(self, state: np.ndarray, step: float) -> np.ndarray:
        """T⁻¹(fl32(state) · fl32(Δ)) per group, float32 (SPEC §6)."""
        y = (state.astype(np.float32) * np.float32(step)).reshape(self.rows, self.width)
        out = np.empty_like(y)
        for g, (a, b) in enumerate(self.groups):
            x = y[a:b].copy()
            for k in reversed(range(self.couplings)):
                keep, change = (slice(1, None, 2), slice(0, None, 2)) if k % 2 else (slice(0, None, 2), slice(1, None, 2))
                s = self._mlp(g, k, "scale", x[:, keep], tanh=True)
                t = self._mlp(g, k, "shift", x[:, keep], tanh=False)
                x[:, change] = (x[:, change] - t) * np.exp(-s)
            out[a:b] = x
        return out

    def _mlp(self, g: int, k: int, net: str, x: np.ndarray, tanh: bool) -> np.ndarray:
        p = f"codec.flow.{g}.layers.{k}.{net}."
        for i in (0, 2, 4):
            x = x @ self.tensors[f"{p}{i}.weight"].astype(np.float32).T + self.tensors[f"{p}{i}.bias"].astype(np.float32)
            if i < 4:
                x = np.where(x >= 0, x, np.float32(0.2) * x)
        return np.tanh(x) if tanh else x


def unpack(stored: np.ndarray, dtype: str, shape: list[int]) -> np.ndarray:
    """A packed tensor (SPEC §5): inflate, then byte j of element e is at position j·n + e (n elements)."""
    dt = np.dtype(dtype).newbyteorder("<")
    n = int(np.prod(shape, dtype=np.int64))
    inflater = zlib.decompressobj()
    data = inflater.decompress(stored.astype(np.uint8).tobytes())
    if len(data) != n * dt.itemsize or not inflater.eof or inflater.unused_data:
        raise ValueError("packed tensor does not inflate to its stated size")
    planes = np.frombuffer(data, dtype=np.uint8).reshape(dt.itemsize, n)
    return np.ascontiguousarray(planes.T).view(dt).reshape(shape)


def unpack_grid8(stored: np.ndarray, dtype: str, shape: list[int]) -> np.ndarray:
    """A grid8 packed tensor (SPEC §5, version 3): inflate to R exponents then R·K codes (int8); value c · 2^e."""
    n = int(np.prod(shape, dtype=np.int64))
    rows = n // shape[-1] if shape[-1] else 0
    inflater = zlib.decompressobj()
    data = np.frombuffer(inflater.decompress(stored.astype(np.uint8).tobytes()), dtype=np.int8)
    if len(data) != rows + n or not inflater.eof or inflater.unused_data:
        raise ValueError("grid8 tensor does not inflate to its stated size")
    e, codes = data[:rows].astype(np.int64), data[rows:].astype(np.float64).reshape(rows, -1)
    if e.min(initial=-24) < -24 or e.max(initial=8) > 8 or codes.min(initial=0) < -127:
        raise ValueError("grid8 exponent or code out of range")
    return (codes * np.exp2(e)[:, None]).astype(dtype).reshape(shape)


def integer_frequencies(probs: list[Fraction]) -> list[int]:
    """SPEC §4.2: f_i = 1 + floor(p_i (2^16 - N)), remainder to the first largest p_i."""
    n = len(probs)
    f = [1 + int(p * (TOTAL16 - n)) for p in probs]
    best = max(range(n), key=lambda i: (probs[i], -i))
    f[best] += TOTAL16 - sum(f)
    return f


def irwin_hall_table(g: int) -> tuple[int, list[int]]:
    n = 3 + (g - 1)

    def cdf(x: Fraction) -> Fraction:
        u = x + Fraction(n, 2)
        if u <= 0:
            return Fraction(0)
        if u >= n:
            return Fraction(1)
        return sum((-1) ** k * comb(n, k) * (u - k) ** n for k in range(int(u) + 1)) / factorial(n)

    h = min((n + 1) // 2, 127)
    probs = [cdf(Fraction(2 * v + 1, 2)) - cdf(Fraction(2 * v - 1, 2)) for v in range(-h, h + 1)]
    return -h, integer_frequencies(probs + [1 - sum(probs)])


def model_intervals(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §4.1 for rows of frequencies: left cumulatives L and probabilities p, shape (rows, N)."""
    n = freqs.shape[-1]
    f32 = freqs.astype(np.float32)
    sigma = np.float32(2**P - n) / f32.sum(axis=-1, keepdims=True, dtype=np.float32)
    cum = np.concatenate([np.zeros(freqs.shape[:-1] + (1,), np.int64), np.cumsum(freqs, axis=-1)], axis=-1)
    scaled = np.floor(cum.astype(np.float32) * sigma).astype(np.int64)  # float32 product, then truncation
    s = np.arange(n + 1)
    left = scaled[..., :-1] + s[:-1]
    right = scaled[..., 1:] + s[1:]
    right[..., -1] = 2**P
    return left, right - left


class RansReader:
    """SPEC §4: a stack of u32 words read from the end."""

    def __init__(self, payload: bytes) -> None:
        if len(payload) % 4:
            raise ValueError("payload length is not a multiple of 4")
        self.words = list(struct.unpack(f"<{len(payload) // 4}I", payload))
        self.x = self.words.pop() if self.words else 0
        self._refill()

    def _refill(self) -> None:
        if self.x < 2**32 and self.words:
            self.x = (self.x << 32) | self.words.pop()

    def decode(self, left: np.ndarray, prob: np.ndarray) -> int:
        u = self.x & (2**P - 1)
        s = int(np.searchsorted(left, u, side="right")) - 1
        self.x = int(prob[s]) * (self.x >> P) + (u - int(left[s]))
        self._refill()
        return s

    def finish(self) -> None:
        if self.words or self.x != 0:
            raise ValueError("corrupted payload: rANS data does not end where the symbols do")


UNIFORM16 = (np.arange(65536) * 256, np.full(65536, 256))  # SPEC §4.1: the 16-bit uniform model (L, p)


def check_value(parts: list[np.ndarray]) -> int:
    """SPEC §4 (v2): low 16 bits of the CRC-32 of the parts' values, each a little-endian int32, in order."""
    data = b"".join(struct.pack(f"<{len(v)}i", *(int(x) for x in v)) for v in parts)
    return zlib.crc32(data) & 0xFFFF


def uniform_row(n: int) -> np.ndarray:
    """SPEC §4.1 (v4): the step choice's model, n equal probabilities turned into integers by §4.2's rule."""
    return np.array([integer_frequencies([Fraction(1, n)] * n)], dtype=np.int64)


def decode_part(reader: RansReader, offsets: np.ndarray, left: np.ndarray, prob: np.ndarray, count: int) -> np.ndarray:
    shared = left.shape[0] == 1
    esc_symbol = left.shape[1] - 1
    sym = np.array([reader.decode(left[0 if shared else c], prob[0 if shared else c]) for c in range(count)], dtype=np.int64)
    values = sym + (offsets[0] if shared else offsets)
    for c in np.flatnonzero(sym == esc_symbol):
        z = reader.decode(*UNIFORM16) | (reader.decode(*UNIFORM16) << 16)
        values[c] = z // 2 if z % 2 == 0 else -(z + 1) // 2
    return values


def require(condition: bool, message: str) -> None:
    """A decoding error (never an assert: those vanish under python -O)."""
    if not condition:
        raise ValueError(message)


def decode_file(model: Model, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Returns (integer states after each face packet (faces, C), decoded W+ (frames, rows, width) float32, all
    NaN for no-face frames)."""
    require(data[:4] == b"SGNC" and data[4] in (1, 2, 3, 4, 5, 6), "not an sgnc v1 to v6 file")
    version = data[4]
    switching = version in (4, 6)  # SPEC §2: `steps` and a step choice per face packet (v4, v6)
    tools = version in (5, 6)  # SPEC §2: `context`, `decimation` and repeats (v5, v6)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[5:])
    header = next(unpacker)
    require(len(header) == {3: 10, 4: 11, 5: 12, 6: 13}.get(version, 9), "unknown header field")
    context = header["context"] if tools else "factorized"  # SPEC §2 (v5, v6)
    decimation = header["decimation"] if tools else 1
    require(context in ("factorized", "temporal") and 1 <= decimation <= 16, "bad context or decimation")
    residual = header["residual"] if version >= 3 else "irwin_hall"
    require(residual in ("irwin_hall", "empirical"), "unknown residual table")
    require(bytes(header["model_id"]).hex() == model.model_id, "model mismatch")
    g, mode = header["g"], header["mode"]
    steps = header["steps"] if switching else [header["step"]]
    multiples = [s / steps[0] for s in steps]  # SPEC §2 (v4): integers, in binary64
    require(steps[0] == header["step"] and all(m == int(m) for m in multiples), "bad step list")
    require(all(b > a for a, b in zip(steps, steps[1:])) and (not switching or 2 <= len(steps) <= 16), "bad step list")
    choice_model = model_intervals(uniform_row(len(steps))) if switching else None
    step_tables = []  # per step of the stream: its multiple and the (offsets, (L, p)) of intra, difference, residual
    for step, multiple in zip(steps, multiples):
        step_index = model.steps.index(step)
        intra_t, diff_t = model.table("intra", step_index), model.table("diff", step_index)
        res_t = None
        if mode == "open" and g > 0 and residual == "empirical":
            off, freqs = model.table(f"residual.{g}", step_index)
            res_t = (off, model_intervals(freqs))
        elif mode == "open" and g > 0:
            off, freqs = irwin_hall_table(g)
            res_t = (np.array([off]), model_intervals(np.array([freqs], dtype=np.int64)))
        ctx_t = None
        if context == "temporal":  # SPEC §4.3: rows 3·S, chosen per channel by the previous difference
            classes, row_off, row_freqs = model.context(step_index)
            ctx_t = (classes, len(row_off) // 3, row_off, model_intervals(row_freqs))
        step_tables.append((int(multiple), (intra_t[0], model_intervals(intra_t[1])), (diff_t[0], model_intervals(diff_t[1])), res_t, ctx_t))
    c = model.rows * model.width
    types = (0, 1, 2, 5, 6) if version >= 2 else (0, 1, 2)
    states, decoded, state, last_seq, faces = [], [], None, None, 0
    previous = np.zeros(c, dtype=np.int64)  # SPEC §4.3: the last decoded difference
    sent_step = 0  # SPEC §4.3 (v6): the step of the last face packet with a payload
    intra_packets = []
    for k in range(header["frames"] + 1):
        pos = 5 + unpacker.tell()
        ptype, seq, frame, ts, payload = next(unpacker)
        if ptype == 4:
            require(struct.unpack("<I", payload)[0] == zlib.crc32(data[:pos]), "checksum mismatch")
            require((k, seq, frame) == (header["frames"], faces, header["frames"]), "bad end packet")
            break
        require(ptype in types, f"packet type {ptype} not allowed in a version {version} file")
        if ptype in (1, 2):
            seq = last_seq + 1 + (seq - last_seq - 1) % 256
            frame = seq + frame
        require(seq == faces and (version == 1 or frame == k), "bad packet numbering")
        if ptype == 5:  # no face: state untouched, no sequence number used
            decoded.append(np.full((model.rows, model.width), np.nan, dtype=np.float32))
            continue
        last_seq, faces = seq, faces + 1
        if tools and ptype == 1 and not payload:  # SPEC §4.3: a repeat, state and context memory kept
            require(state is not None, "inter frame before any intra frame")
            states.append(state)
            decoded.append(model.inverse(state, steps[0]))
            continue
        reader = RansReader(payload)
        choice = reader.decode(choice_model[0][0], choice_model[1][0]) if switching else 0  # SPEC §4 (v4, v6)
        multiple, (intra_off, intra_i), (diff_off, diff_i), res_t, ctx_t = step_tables[choice]
        if ptype in (0, 6):
            parts = [decode_part(reader, intra_off, *intra_i, c)]
            state = multiple * parts[0]
            previous = np.zeros(c, dtype=np.int64)
        else:
            require(state is not None, "inter frame before any intra frame")
            if ctx_t is not None and choice == sent_step:  # SPEC §4.3 (v6): a switch frame uses the difference table
                classes, n_classes, row_off, (row_l, row_p) = ctx_t
                rows = (np.clip(previous, -1, 1) + 1) * n_classes + classes
                parts = [decode_part(reader, row_off[rows], row_l[rows], row_p[rows], c)]
            else:
                parts = [decode_part(reader, diff_off, *diff_i, c)]
            previous = parts[0]
            if ptype == 2:
                require(res_t is not None, "residual frame in a stream without residuals")
                parts.append(decode_part(reader, res_t[0], *res_t[1], c))
            state = state + multiple * sum(parts)
        sent_step = choice
        if version >= 2:
            checked = ([np.array([choice])] if switching else []) + parts
            require(reader.decode(*UNIFORM16) == check_value(checked), "corrupted payload: check value mismatch")
        reader.finish()
        require(np.abs(state).max() < 2**30, "state out of range")
        states.append(state)
        decoded.append(model.inverse(state, steps[0]))
        if ptype in (0, 6):
            intra_packets.append(k)
    else:
        raise ValueError("no end packet after the frames the header announces")
    frames = np.array(decoded, dtype=np.float32).reshape(len(decoded), model.rows, model.width)
    return np.array(states, dtype=np.int64).reshape(len(states), c), interpolate(frames, set(intra_packets), decimation)


def interpolate(packets: np.ndarray, intra: set[int], d: int) -> np.ndarray:
    """SPEC §1 (v5 decimation): d output frames per packet; w_k + fl32(i/d)·(w_{k+1} − w_k) between two face packets
    when k + 1 is not intra, else packet k's frame held (also after the last packet)."""
    out = np.repeat(packets, d, axis=0)
    for k in range(len(packets) - 1):
        if not np.isnan(packets[k]).all() and not np.isnan(packets[k + 1]).all() and k + 1 not in intra:
            for i in range(1, d):
                out[k * d + i] = packets[k] + np.float32(i / d) * (packets[k + 1] - packets[k])
    return out


def main(argv: list[str]) -> int:
    model_path, sgnc, states_out, decoded_out = argv
    states, decoded = decode_file(Model(model_path), open(sgnc, "rb").read())
    np.save(states_out, states)
    np.save(decoded_out, decoded)
    print(f"{len(decoded)} frames decoded ({len(states)} with a face)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
