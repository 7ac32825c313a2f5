"""Per-stream latent coding: intra frames, differences, periodic residuals, keyframes.

Units: the proxy value y = T(w) divided by the step Δ. The decoder's state ŷ is an integer vector; it is
the only thing that persists between frames, so the state is exact on any machine (the float W+ after T⁻¹ agrees
within the tolerance of :mod:`sganc_stream.latent.model`). The encoder's integers come from T in float: they are
exact for one machine and thread count, and may differ by one where y lies within float error of a rounding tie.

* intra:  q = round(y_t)                      ŷ_t = q
* open:   v_t = round(y_t - y_{t-1})          ŷ_t = ŷ_{t-1} + v_t     (the paper's open loop; drifts)
          every g-th frame after an intra:  r_t = round(y_t - ŷ_t),  ŷ_t += r_t  (Irwin-Hall table, or the
          model's empirical residual table for g: ``StreamParams.residual``, bitstream v3)
* closed: v_t = round(y_t - ŷ_{t-1})          ŷ_t = ŷ_{t-1} + v_t     (no drift, no residual)

An intra frame is sent first, every ``keyframe_interval`` frames (0 = never again), on request, and when the
coded identity changes (a new-face intra frame, bitstream v2). No-face frames (v2) never reach this level: they
leave the state alone and are handled by whoever reads packets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sganc_stream.bitstream.container import VERSION
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.entropy.irwin_hall import MAX_G
from sganc_stream.entropy.rans import decode_parts, encode_parts
from sganc_stream.entropy.tables import CodingTable
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.latent.model import RESIDUAL_TABLES, LatentCodecModel

STATE_LIMIT = 1 << 30  # a state beyond this can only come from corrupted data


MODES = ("open", "closed", "intra")


@dataclass(frozen=True)
class StreamParams:
    """How a stream is coded. The one place coding options are validated: every CLI and the live call build one
    before any work starts, so a bad option is one InputError line up front (the step preset is checked by
    ``LatentCodecModel.step_index``, which turns a step into ``step_index``)."""

    mode: str = "open"  # open | closed | intra
    g: int = 10  # residual period in open mode; 0 = never
    step_index: int = 1
    keyframe_interval: int = 0
    residual: str = "irwin_hall"  # residual table: irwin_hall (the paper's, derived) | empirical (stored in the model)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"coding mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (isinstance(self.g, int) and 0 <= self.g <= MAX_G):
            raise InputError(f"residual period g must be between 0 and {MAX_G}, got {self.g}")
        if not (isinstance(self.keyframe_interval, int) and self.keyframe_interval >= 0):
            raise InputError(f"keyframe interval must be >= 0 (0 = first frame only), got {self.keyframe_interval}")
        if not (isinstance(self.step_index, int) and self.step_index >= 0):
            raise InputError(f"step index must be a non-negative integer, got {self.step_index}")
        if self.residual not in RESIDUAL_TABLES:
            raise InputError(f"residual table must be one of {', '.join(RESIDUAL_TABLES)}, got {self.residual!r}")
        if self.residual != "irwin_hall" and not (self.mode == "open" and self.g > 0):
            raise InputError("an empirical residual table needs residuals: open mode with g > 0")

    def residual_table(self, model: LatentCodecModel) -> CodingTable | None:
        """The residual table these parameters code with (None without residuals); InputError if ``model`` lacks it."""
        if self.mode != "open" or self.g == 0:
            return None
        return model.residual_table(self.g, self.step_index, self.residual)


@dataclass
class CodedFrame:
    type: PacketType
    payload: bytes
    ideal_bits: float
    recon: np.ndarray  # (rows, width) float32: exactly what the decoder will output


class LatentStreamEncoder:
    """Stateful encoder for one stream; ``encode`` takes one W+ frame (rows, width)."""

    def __init__(self, model: LatentCodecModel, params: StreamParams) -> None:
        self.model, self.params = model, params
        self.step = model.steps[params.step_index]
        self.intra_table = model.tables["intra"][params.step_index]
        self.diff_table = model.tables["diff"][params.step_index]
        self.res_table = params.residual_table(model)
        self._state: np.ndarray | None = None
        self._prev_y: np.ndarray | None = None
        self._since_intra = 0
        self._force_intra = True

    def request_keyframe(self) -> None:
        self._force_intra = True

    def encode(self, wplus: np.ndarray, *, new_face: bool = False) -> CodedFrame:
        """One W+ frame (rows, width) → a coded frame; ``new_face``: the identity changed, send a NEW_FACE intra frame.

        Raises InputError for a frame of the wrong shape, with NaN/infinity, or out of the model's range.
        """
        m, p = self.model, self.params
        if wplus.shape != (m.rows, m.width):
            raise InputError(f"latent frame has shape {wplus.shape}, this model codes ({m.rows}, {m.width})")
        if not np.isfinite(wplus).all():
            raise InputError("latent frame contains NaN or infinity")
        y = m.to_proxy(wplus) / self.step
        # Checked in float, before any cast (a huge value wraps in int64), and written so that NaN fails too: finite
        # but huge W+ (up to 3e38) overflows inside T's coupling layers to inf and then NaN.
        if not (np.abs(y) < STATE_LIMIT).all():
            raise InputError("latent values too large for this model's step (proxy state out of range)")
        intra = new_face or self._force_intra or p.mode == "intra" or (p.keyframe_interval and self._since_intra + 1 >= p.keyframe_interval)
        if intra:
            q = np.rint(y).astype(np.int64)
            parts = [(q, self.intra_table)]
            ptype = PacketType.NEW_FACE if new_face and self._state is not None else PacketType.INTRA
            self._state, self._since_intra, self._force_intra = q, 0, False
        else:
            assert self._state is not None and self._prev_y is not None
            self._since_intra += 1
            ref = self._prev_y if p.mode == "open" else self._state
            v = np.rint(y - ref).astype(np.int64)
            state = self._state + v
            parts, ptype = [(v, self.diff_table)], PacketType.INTER
            if self.res_table is not None and self._since_intra % p.g == 0:
                r = np.rint(y - state).astype(np.int64)
                state = state + r
                parts.append((r, self.res_table))
                ptype = PacketType.INTER_RESIDUAL
            self._state = state
        if np.abs(self._state).max(initial=0) >= STATE_LIMIT:
            raise InputError("latent values too large for this model's step (proxy state out of range)")
        self._prev_y = y
        payload = encode_parts(parts)
        ideal = sum(t.ideal_bits(v) for v, t in parts)
        return CodedFrame(ptype, payload, ideal, m.from_state(self._state, p.step_index))


class LatentStreamDecoder:
    """Stateful decoder: integer state in, W+ frame out. Inter frames need a preceding intra frame.

    ``version``: the stream's bitstream version (v2 payloads end with a check value, v1 payloads do not).
    """

    def __init__(self, model: LatentCodecModel, params: StreamParams, version: int = VERSION) -> None:
        self.model, self.params, self.version = model, params, version
        self.intra_table = model.tables["intra"][params.step_index]
        self.diff_table = model.tables["diff"][params.step_index]
        self.res_table = params.residual_table(model)
        self._state: np.ndarray | None = None

    @property
    def synchronized(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> np.ndarray | None:
        """A copy of the integer state (for conformance checks)."""
        return None if self._state is None else self._state.copy()

    def reset(self) -> None:
        """Forget the state (after a lost packet): the next decodable frame is an intra frame."""
        self._state = None

    def parts(self, ptype: PacketType, payload: bytes) -> list[tuple[np.ndarray, CodingTable]]:
        """The coded parts of one face packet, in coding order, each (values (C,) int64, its table): the intra
        values, or the latent difference then (inter+residual) the residual. Needs no state; BitstreamError for
        corrupt data or a packet this stream cannot hold."""
        if not ptype.is_frame:
            raise BitstreamError(f"{ptype.label} packet is not a face frame")
        if ptype == PacketType.INTER_RESIDUAL and self.res_table is None:
            raise BitstreamError("residual frame in a stream without residuals")
        tables = ([self.intra_table] if ptype.is_intra else
                  [self.diff_table] + ([self.res_table] if ptype == PacketType.INTER_RESIDUAL else []))
        values = decode_parts(payload, [(t, self.model.channels) for t in tables], check=self.version >= 2)
        return list(zip(values, tables))

    def decode(self, ptype: PacketType, payload: bytes) -> np.ndarray:
        """One face packet → the (rows, width) float32 W+ frame; BitstreamError for corrupt or misplaced data."""
        if ptype.is_frame and not ptype.is_intra and self._state is None:
            raise BitstreamError("inter frame without a preceding intra frame")
        parts = self.parts(ptype, payload)
        state = parts[0][0] if ptype.is_intra else self._state + sum(v for v, _ in parts)
        if np.abs(state).max(initial=0) >= STATE_LIMIT:
            raise BitstreamError("corrupted payload: latent state out of range")
        self._state = state
        return self.model.from_state(state, self.params.step_index)
