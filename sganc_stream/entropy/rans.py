"""rANS coding of integer vectors against frozen tables, through constriction's AnsCoder.

One payload holds several parts (e.g. differences then residuals), each a vector of C integers with
its table. Decode order inside a payload: part 1 symbols, part 1 escapes, part 2 symbols, ... An escape
value is its zig-zag code as an unsigned 32-bit integer, sent as two uniform 16-bit symbols (low, high).
Payload bytes are the coder's 32-bit words, little-endian. A payload must decode to exactly the coder's
initial state; anything else is reported as corruption.

That end check alone misses most alterations of the words decoded last: rANS (constriction's coder starts
from an empty state) has almost no redundancy, so nearly any word sequence is some valid message, and an
altered escape value (two uniform 16-bit symbols) always is. So bitstream v2 ends every payload (decoded
last, after all parts) with one more uniform 16-bit symbol, the **check value**: the low 16 bits of the
CRC-32 (zlib's) of all decoded values, part after part, each as a little-endian int32. An altered payload
that still decodes passes it with probability 2^-16 (bitstream_spec/SPEC.md §4). Cost: pushed first onto the
empty coder, the value fills bits that the first symbol's interval leaves unused (there are 16 whenever that
symbol's probability is at least 2^-8), so it is nearly free: +0.74 bytes per packet on the conformance vectors
(benchmarks/payload_alterations.py).

Bitstream v4 (rate control) puts one more symbol in front of the parts, decoded first: the **step choice** ``j``,
an index into the stream's list of steps, coded with the equal-frequency model of that list's length
(:func:`sganc_stream.entropy.tables.uniform_freqs`); it names the tables the parts are coded with, and the check
value covers it (int32 ``j`` before the parts' values).

Speed: the encoder codes each symbol from its table's 24-bit model (SPEC §4.1), built once per frozen table
(:attr:`CodingTable.cdf`), through a 3-symbol row that constriction quantizes to exactly the same interval
(:func:`_interval_rows`), instead of handing constriction the table's full rows, which it re-sums on every call. The
bytes are the same. The decoder still hands over the full rows (it must search them).
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import constriction
import numpy as np

from sganc_stream.entropy.tables import CODER_PRECISION, CodingTable, uniform_freqs
from sganc_stream.errors import BitstreamError

_FAMILY = constriction.stream.model.Categorical(perfect=False)
_UNIFORM16 = constriction.stream.model.Uniform(1 << 16)
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.int64)
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)


def _interval_rows(table: CodingTable, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The symbols (C,) int32 and 3-wide float32 rows (C, 3) of constriction's categorical family that code each
    channel's symbol ``sym`` with exactly its interval ``[left, right)`` under ``table`` (SPEC §4.1, from the table's
    cached :attr:`CodingTable.cdf`).

    Encoding reads only the coded symbol's interval, so these rows give the bytes of the table's full rows, while
    constriction's model of a row costs 3 float additions instead of O(L) (it sums every row it is given, on every
    call: with the face model's 149-symbol tables that was about 1 ms a frame). Each row sums to ``2^24 − 3``, so the
    model's scale ``(2^24 − 3) / sum`` is exactly 1 and its cumulatives are the row's prefix sums plus the symbol
    index: symbol 0 of ``[p − 1, 2^24 − 2 − p, 0]`` has ``[0, p)``; symbol 1 of ``[l − 1, p − 1, 2^24 − 1 − l − p]``
    has ``[l, l + p)``; symbol 2, the last, whose right end is 2^24 by rule, of ``[0, l − 2, p − 1]`` has
    ``[l, 2^24)``. All entries are integers < 2^24, exact in float32. These cover every interval of a valid table:
    every frequency is ≥ 1 in 2^16, so a symbol other than the first starts at ``l ≥ 256`` and the first ends below
    2^24."""
    left, right = table.intervals(sym)
    top = 1 << CODER_PRECISION
    rows = np.empty((left.size, 3), dtype=np.int64)  # symbol 1, [l − 1, p − 1, 2^24 − 1 − l − p]: nearly every channel
    rows[:, 0] = left - 1
    rows[:, 1] = right - left - 1
    rows[:, 2] = (top - 1) - right
    k = np.ones(left.size, dtype=np.int32)
    first = np.flatnonzero(left == 0)
    rows[first] = np.stack([right[first] - 1, (top - 2) - right[first], np.zeros_like(first)], axis=1)
    k[first] = 0
    last = np.flatnonzero(right == top)
    rows[last] = np.stack([np.zeros_like(last), left[last] - 2, (top - 1) - left[last]], axis=1)
    k[last] = 2
    return k, rows.astype(np.float32)


def _model(table: CodingTable) -> object:
    # Decoding: shared tables use one concrete model; per-channel tables use the family with a row per symbol.
    return constriction.stream.model.Categorical(table.probs[0], perfect=False) if table.shared else _FAMILY


def check_value(values: Sequence[np.ndarray]) -> int:
    """The v2 payload check: low 16 bits of the CRC-32 of the parts' values as little-endian int32, in order."""
    crc = 0
    for v in values:
        crc = zlib.crc32(np.asarray(v).astype("<i4").tobytes(), crc)
    return crc & 0xFFFF


def _choice_model(choices: int) -> object:
    """The equal-frequency model of a v4 step choice among ``choices`` (2 … 16) steps."""
    return constriction.stream.model.Categorical(np.asarray(uniform_freqs(choices), dtype=np.float32), perfect=False)


def encode_parts(parts: Sequence[tuple[np.ndarray, CodingTable]], choice: tuple[int, int] | None = None) -> bytes:
    """Code each (values (C,), table) part into one v2 payload, check value included; values must fit in int32
    (ValueError otherwise). ``choice``: (j, choices) for a v4 payload, the step choice ``j`` coded first."""
    for values, _ in parts:
        if values.size and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
            raise ValueError("latent symbol out of the int32 range")
    coder = constriction.stream.stack.AnsCoder()
    # The ANS coder is a stack: push the last-decoded item first.
    checked = [v for v, _ in parts] if choice is None else [np.array([choice[0]]), *(v for v, _ in parts)]
    coder.encode_reverse(np.array([check_value(checked)], dtype=np.int32), _UNIFORM16)
    for values, table in reversed(parts):
        sym, esc = table.symbols(values)
        z = _zigzag(values[esc])
        raw = np.stack([z & 0xFFFF, z >> 16], axis=1).reshape(-1).astype(np.int32)
        if raw.size:
            coder.encode_reverse(raw, _UNIFORM16)
        k, rows = _interval_rows(table, sym)  # the table's cached intervals: no per-frame model of its full rows
        coder.encode_reverse(k, _FAMILY, rows)
    if choice is not None:
        coder.encode_reverse(np.array([choice[0]], dtype=np.int32), _choice_model(choice[1]))
    return coder.get_compressed().astype("<u4").tobytes()


def decode_parts(payload: bytes, tables: Sequence[tuple[CodingTable, int]], *, check: bool = True) -> list[np.ndarray]:
    """Inverse of :func:`encode_parts` for parts (table, C): int64 arrays (C,).

    Raises BitstreamError on corrupt data: words left over or a non-empty coder after the last symbol, and (with
    ``check``, bitstream v2; False reads a v1 payload) a check value that differs from the decoded values'.
    """
    return _decode(payload, 0, lambda _: tables, check)[1]


def decode_chosen(payload: bytes, choices: int,
                  tables_of: Callable[[int], Sequence[tuple[CodingTable, int]]]) -> tuple[int, list[np.ndarray]]:
    """A v4 payload: the step choice ``j`` (0 … choices − 1) first, then the parts ``tables_of(j)``; (j, values).
    BitstreamError as :func:`decode_parts` (the check value covers ``j``)."""
    return _decode(payload, choices, tables_of, True)


def peek_choice(payload: bytes, choices: int) -> int:
    """The step choice ``j`` (0 … choices − 1) a v4 / v6 face payload starts with (SPEC §4), read without the
    model's tables: it is the first symbol decoded. The rest of the payload is not checked (its check value covers
    ``j`` only when the whole payload is decoded). BitstreamError for a payload that is not whole 32-bit words or
    holds no symbol."""
    if len(payload) % 4 or not payload:
        raise BitstreamError("corrupted payload: length is not a whole, non-zero number of 32-bit words")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        return int(coder.decode(_choice_model(choices), 1)[0])
    except ValueError as exc:
        raise BitstreamError(f"corrupted payload ({exc})") from None


def _decode(payload: bytes, choices: int, tables_of: Callable[[int], Sequence[tuple[CodingTable, int]]],
            check: bool) -> tuple[int, list[np.ndarray]]:
    if len(payload) % 4:
        raise BitstreamError("corrupted payload: length is not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        j = int(coder.decode(_choice_model(choices), 1)[0]) if choices else 0
        out = []
        for table, count in tables_of(j):
            sym = coder.decode(_model(table), count) if table.shared else coder.decode(_FAMILY, table.probs)
            sym = np.asarray(sym, dtype=np.int64)
            values = sym + (table.offsets[0] if table.shared else table.offsets)
            esc = sym == table.num_symbols - 1
            n_esc = int(esc.sum())
            if n_esc:
                raw = np.asarray(coder.decode(_UNIFORM16, 2 * n_esc), dtype=np.int64).reshape(-1, 2)
                values[esc] = _unzigzag(raw[:, 0] | (raw[:, 1] << 16))
            out.append(values)
        stored = int(coder.decode(_UNIFORM16, 1)[0]) if check else None
    except ValueError as exc:
        raise BitstreamError(f"corrupted payload ({exc})") from None
    if not coder.is_empty():
        raise BitstreamError("corrupted payload: rANS data does not end where the symbols do")
    if check and stored != check_value(out if not choices else [np.array([j]), *out]):
        raise BitstreamError("corrupted payload: check value mismatch")
    return j, out
