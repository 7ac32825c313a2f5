"""Per-stream latent coding: intra frames, differences, periodic residuals, keyframes.

Units: the proxy value y = T(w) divided by the step Δ. The decoder's state ŷ is an integer vector; it is
the only thing that persists between frames, so the state is exact on any machine (the float W+ after T⁻¹ agrees
within the tolerance of :mod:`sganc_stream.latent.model`). The encoder's integers come from T in float: they are
exact for one machine and thread count, and may differ by one where y lies within float error of a rounding tie.

* intra:  q = round(y_t)                      ŷ_t = q
* open:   v_t = round(y_t - y_{t-1})          ŷ_t = ŷ_{t-1} + v_t     (the paper's open loop; drifts)
          with drift damping α (``StreamParams.damping``, encoder only): v_t = round(y_t − y_{t−1} + α·(y_{t−1} − ŷ_{t−1})),
          each difference correcting a share α of the drift so far (α = 0: the paper's; α = 1: closed loop)
          every g-th frame after an intra:  r_t = round(y_t - ŷ_t),  ŷ_t += r_t  (Irwin-Hall table, or the
          model's empirical residual table for g: ``StreamParams.residual``, bitstream v3)
* closed: v_t = round(y_t - ŷ_{t-1})          ŷ_t = ŷ_{t-1} + v_t     (no drift, no residual)

``round`` of a difference v_t is the quantizer of :mod:`sganc_stream.latent.quantize`: to nearest by default, or with
a dead zone (``StreamParams.rounding_offset`` f < 0.5: sign(x)·⌊|x| + f⌋, an encoder choice, any bitstream version).
Residuals and intra values are always rounded to nearest.

How v_t is coded (``StreamParams.inter_context``): with the model's one factorized table per step (the paper's), or
(bitstream v5, ``temporal``) each channel with the table its previous decoded difference selects
(:mod:`sganc_stream.latent.context`); either way the integers, the state and the latents are the same. In a v5 (and
v6) stream an inter frame whose difference is all zero (a repeated source frame) is a **repeat**: an inter packet with
an empty payload, leaving the state and the context memory as they are (a coded one costs 28–224 bytes: SPEC §4).

An intra frame is sent first, every ``keyframe_interval`` frames (0 = never again), on request, and when the
coded identity changes (a new-face intra frame, bitstream v2). No-face frames (v2) never reach this level: they
leave the state alone and are handled by whoever reads packets.

Rate control (``StreamParams.target_kbps``, bitstream v4; v6 with temporal context or decimation): the stream
switches among steps ``Δ_j = m_j · Δ_0``, the state counts units of Δ_0, and a frame coded with step j adds ``m_j``
times its integers (intra: ŷ = m_j·q). The step changes only at a group start (:mod:`sganc_stream.latent.rate`); the
first inter frame after a change codes ``round((y_t − ŷ_{t−1}) / m_j)`` (closed loop for that frame) so the new step
starts without the old step's drift. In v6 with temporal context that switch frame (its step differs from the last
sent payload's) codes its difference with the step's factorized table, not the context rows (SPEC §4.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sganc_stream.bitstream.container import (MAX_DECIMATION, MAX_STEPS, VERSION, StreamHeader, has_v5_tools,
                                               step_multiples, stream_version, switches_steps)
from sganc_stream.bitstream.packet import Packet, PacketType, pack
from sganc_stream.entropy.irwin_hall import MAX_G
from sganc_stream.entropy.rans import decode_chosen, decode_parts, encode_parts
from sganc_stream.entropy.tables import CodingTable
from sganc_stream.errors import BitstreamError, InputError
from sganc_stream.latent.context import INTER_CONTEXTS
from sganc_stream.latent.model import RESIDUAL_TABLES, LatentCodecModel
from sganc_stream.latent.quantize import ROUNDING_OFFSET, quantize
from sganc_stream.latent.rate import RATE_GROUP, RateController, StepTables

STATE_LIMIT = 1 << 30  # a state beyond this can only come from corrupted data


MODES = ("open", "closed", "intra")
TARGET_KBPS_RANGE = (1.0, 100_000.0)  # kbit/s a rate-controlled stream may aim at
# What ``--residual-table`` accepts: a concrete table (RESIDUAL_TABLES), or ``auto`` (the default), which
# :func:`resolve_residual` turns into one once the model is known. StreamParams only ever holds a concrete table.
AUTO = "auto"  # a choice the model decides: the residual table (resolve_residual), the encoder's (resolve_encoder_choices)
RESIDUAL_CHOICES = (AUTO, *RESIDUAL_TABLES)
CONTEXT_CHOICES = (AUTO, *INTER_CONTEXTS)


def resolve_residual(residual: str, mode: str, g: int, model: LatentCodecModel | None) -> str:
    """The concrete residual table of a requested one (the one place ``auto`` is resolved): ``auto`` is ``empirical``
    when the stream has residuals (open mode, g > 0) and ``model`` holds an empirical table for g, else
    ``irwin_hall`` (also with no model yet: options checked before it is loaded). Any other name is returned as it
    is, for StreamParams to validate (an explicit ``empirical`` the model lacks stays its InputError)."""
    if residual != AUTO:
        return residual
    has_table = model is not None and mode == "open" and isinstance(g, int) and g > 0 and g in model.empirical_residuals
    return "empirical" if has_table else "irwin_hall"


def resolve_encoder_choices(inter_context: str, damping: float | str, rounding_offset: float | str, mode: str,
                            model: LatentCodecModel | None) -> tuple[str, float, float]:
    """The concrete inter context, drift damping and rounding offset of requested ones (the one place their ``auto``
    is resolved). ``auto`` means what ``model``'s tables were fitted for (its ``tables_encoder``, recorded by
    ``fit-context-tables``), where the stream's mode can use it: temporal context when the model has temporal-context
    tables and the mode codes inter differences (open, closed); the recorded damping in open mode; the recorded
    rounding offset in open and closed mode. Otherwise, and with no model yet (options checked before it is loaded),
    ``auto`` is the paper's encoder: factorized, no damping, rounding to nearest (0.5). Explicit choices are returned
    as they are, for StreamParams to validate. Tables fitted for an encoder code that encoder's differences in fewer
    bits (MODEL_CARD.md, the held-out bitrate_vs_g runs of the shipped model, both encoders)."""
    fitted = (model.tables_encoder or {}) if model is not None else {}
    if inter_context == AUTO:
        has_tables = model is not None and bool(model.context_tables)
        inter_context = "temporal" if has_tables and mode != "intra" else "factorized"
    if damping == AUTO:
        damping = _fitted_number(fitted, "drift_damping", 0.0) if mode == "open" else 0.0
    if rounding_offset == AUTO:
        rounding_offset = _fitted_number(fitted, "rounding_offset", ROUNDING_OFFSET) if mode != "intra" else ROUNDING_OFFSET
    return inter_context, float(damping), float(rounding_offset)


def _fitted_number(fitted: dict, key: str, default: float) -> float:
    """A number from a model's ``tables_encoder`` record; ``default`` where it is missing or not a number."""
    value = fitted.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class StreamParams:
    """How a stream is coded. The one place coding options are validated: every CLI and the live call build one
    before any work starts, so a bad option is one InputError line up front (the step preset is checked by
    ``LatentCodecModel.step_index``, which turns a step into ``step_index``)."""

    mode: str = "open"  # open | closed | intra
    g: int = 10  # residual period in open mode; 0 = never
    step_index: int = 1
    keyframe_interval: int = 0
    residual: str = "irwin_hall"  # residual table: irwin_hall (the paper's, derived) | empirical (stored in the model);
    # never "auto": the commands resolve that against the model first (resolve_residual)
    target_kbps: float | None = None  # rate control (bitstream v4): packet kbit/s the encoder aims at; None = fixed step
    step_set: tuple[int, ...] = ()  # a v4/v6 stream's step presets (indices, finest first); () = derived from the model
    inter_context: str = "factorized"  # factorized (the paper's) | temporal (bitstream v5, latent.context)
    decimation: int = 1  # code every d-th source frame; the decoder interpolates the others (bitstream v5, latent.sequence)
    damping: float = 0.0  # open mode: share α of the drift each difference corrects (encoder only; any version)
    rounding_offset: float = ROUNDING_OFFSET  # differences' quantizer: 0.5 rounds, less: a dead zone (encoder only)

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
        lo, hi = TARGET_KBPS_RANGE
        if self.target_kbps is not None and not (isinstance(self.target_kbps, (int, float))
                                                 and not isinstance(self.target_kbps, bool)
                                                 and lo <= self.target_kbps <= hi):
            raise InputError(f"target rate must be between {lo:g} and {hi:g} kbit/s, got {self.target_kbps}")
        if self.step_set and (len(self.step_set) < 2 or self.step_set[0] != self.step_index):
            raise InputError("a step set holds at least two presets, the first being the stream's step")
        if self.inter_context not in INTER_CONTEXTS:
            raise InputError(f"inter context must be one of {', '.join(INTER_CONTEXTS)}, got {self.inter_context!r}")
        if self.temporal and self.mode == "intra":
            raise InputError("temporal context codes inter differences: intra mode has none")
        if not (isinstance(self.damping, (int, float)) and not isinstance(self.damping, bool)
                and 0.0 <= self.damping <= 1.0):
            raise InputError(f"drift damping must be between 0 and 1, got {self.damping}")
        if self.damping and self.mode != "open":
            raise InputError(f"drift damping is for open mode ({self.mode} mode has no drift to damp)")
        if not (isinstance(self.rounding_offset, (int, float)) and not isinstance(self.rounding_offset, bool)
                and 0.0 <= self.rounding_offset <= ROUNDING_OFFSET):
            raise InputError(f"rounding offset must be between 0 and {ROUNDING_OFFSET:g}, got {self.rounding_offset}")
        if self.rounding_offset != ROUNDING_OFFSET and self.mode == "intra":
            raise InputError("a rounding offset (dead zone) quantizes inter differences: intra mode has none")
        if not (isinstance(self.decimation, int) and not isinstance(self.decimation, bool)
                and 1 <= self.decimation <= MAX_DECIMATION):
            raise InputError(f"decimation must be an integer between 1 and {MAX_DECIMATION}, got {self.decimation}")

    @property
    def temporal(self) -> bool:
        """Inter differences coded with temporal context (bitstream v5)."""
        return self.inter_context == "temporal"

    @property
    def rate_controlled(self) -> bool:
        """Written as bitstream v4 (v6 with temporal context or decimation): the step may change per group of frames."""
        return self.target_kbps is not None or bool(self.step_set)

    @property
    def group(self) -> int:
        """Face frames per rate-control group: the residual period in open mode with residuals, else RATE_GROUP."""
        return self.g if self.mode == "open" and self.g > 0 else RATE_GROUP

    def steps(self, model: LatentCodecModel) -> tuple[int, ...]:
        """The step presets (indices into ``model.steps``, finest first) this stream codes with: its one step, or for
        rate control ``step_set``, by default every preset that is an integer multiple of ``step_index``'s (at most
        16, finest first). InputError when ``model`` cannot rate-control (fewer than two such presets)."""
        if not self.rate_controlled:
            return (self.step_index,)
        if self.step_index >= len(model.steps):
            raise InputError(f"step index {self.step_index} is not a preset of this model")
        base = model.steps[self.step_index]
        chosen = self.step_set or tuple(sorted((i for i, s in enumerate(model.steps) if s >= base
                                                and step_multiples((base, s)) is not None or i == self.step_index),
                                               key=lambda i: model.steps[i]))[:MAX_STEPS]
        if any(i >= len(model.steps) for i in chosen) or step_multiples(tuple(model.steps[i] for i in chosen)) is None:
            presets = ", ".join(map(str, model.steps))
            raise InputError(f"rate control needs at least two step presets that are integer multiples of step {base} "
                             f"(this model's presets: {presets})")
        return chosen

    def version(self) -> int:
        """The bitstream version a stream with these parameters is written as."""
        return stream_version(self.residual, self.rate_controlled, self.inter_context, self.decimation)

    def header(self, model: LatentCodecModel, fps: float, frames: int) -> StreamHeader:
        """The stream header of a stream coded with these parameters by ``model`` (the one place that builds it:
        files, and the call's hello): version 2, 3 (empirical residual tables), 4 (rate control) or 5 (temporal context,
        decimation), 6 (both 4 and 5). ``fps`` and ``frames``: the packets' rate and count (with decimation d: the
        source's rate / d)."""
        steps = tuple(model.steps[i] for i in self.steps(model)) if self.rate_controlled else ()
        return StreamHeader(model.model_id, model.rows, model.width, self.mode, self.g, model.steps[self.step_index], fps,
                            frames, self.keyframe_interval, self.residual, steps, self.inter_context, self.decimation,
                            self.version())

    def check_model(self, model: LatentCodecModel) -> None:
        """Raise InputError now, not mid-stream, for what ``model`` cannot code with these parameters: a residual
        period without an empirical table, rate control without presets to switch between, temporal context
        without its tables. Every command and the benchmarks check here."""
        self.residual_table(model)
        self.steps(model)
        if self.temporal:
            model.context_table(self.step_index)

    def residual_table(self, model: LatentCodecModel, step_index: int | None = None) -> CodingTable | None:
        """The residual table these parameters code with at preset ``step_index`` (default: the stream's step); None
        without residuals; InputError if ``model`` lacks it."""
        if self.mode != "open" or self.g == 0:
            return None
        return model.residual_table(self.g, self.step_index if step_index is None else step_index, self.residual)


@dataclass
class CodedFrame:
    """One coded face frame. ``recon`` (T⁻¹ of the state) is computed on first use only: a sender that does not show
    its own reconstruction never runs T⁻¹."""

    type: PacketType
    payload: bytes
    ideal_bits: float
    state: np.ndarray  # (channels,) int64: the decoder's integer state after this frame (units of the stream's step)
    step: float  # the quantization step this frame was coded with (rate control: one of the stream's steps)
    model: LatentCodecModel = field(repr=False)
    step_index: int = 0  # the step preset the state counts in
    values: tuple[np.ndarray, ...] = ()  # the coded integers (C,) int64 of each part: intra q, or v (and residual r)

    @cached_property
    def recon(self) -> np.ndarray:
        """(rows, width) float32: exactly what the decoder will output for this frame (T⁻¹ of ``state``)."""
        return self.model.from_state(self.state, self.step_index)


def step_tables(model: LatentCodecModel, params: StreamParams) -> list[StepTables]:
    """The tables of each step the stream codes with (``params.steps``), finest first; InputError as there."""
    steps = params.steps(model)
    multiples = [1] if len(steps) == 1 else step_multiples(tuple(model.steps[i] for i in steps))
    assert multiples is not None  # params.steps checked it
    return [StepTables(m, model.tables["intra"][i], model.tables["diff"][i], params.residual_table(model, i),
                       model.context_table(i) if params.temporal else None)
            for m, i in zip(multiples, steps)]


class LatentStreamEncoder:
    """Stateful encoder for one stream; ``encode`` takes one W+ frame (rows, width).

    ``fps``: the stream's frame rate (rate control turns ``params.target_kbps`` into bits per frame with it).
    """

    def __init__(self, model: LatentCodecModel, params: StreamParams, fps: float = 25.0) -> None:
        self.model, self.params = model, params
        self.steps = step_tables(model, params)
        self.unit = model.steps[params.step_index]
        self.repeats = has_v5_tools(params.version())  # all-zero differences as empty inter packets (v5, v6)
        self.rate = (RateController(self.steps, params.target_kbps, fps, params.mode == "closed", self.repeats,
                                    params.rounding_offset) if params.target_kbps is not None else None)
        self.choice = 0  # the step (index into self.steps) of the current group
        self.choices: list[int] = []  # the step of every face frame coded so far (rate control's record)
        self.fps = fps
        self._state: np.ndarray | None = None
        self._prev_y: np.ndarray | None = None
        self._since_intra = 0
        self._force_intra = True
        self._previous = np.zeros(model.channels, dtype=np.int64)  # the last difference sent (temporal context)
        self._sent_step = 0  # the step of the last face packet with a payload (a switch frame changes it: v6)

    def request_keyframe(self) -> None:
        self._force_intra = True

    def encode(self, wplus: np.ndarray, *, new_face: bool = False) -> CodedFrame:
        """One W+ frame (rows, width) → a coded frame; ``new_face``: the identity changed, send a NEW_FACE intra frame.

        Raises InputError for a frame of the wrong shape, with NaN/infinity, or out of the model's range.
        """
        m = self.model
        if wplus.shape != (m.rows, m.width):
            raise InputError(f"latent frame has shape {wplus.shape}, this model codes ({m.rows}, {m.width})")
        if not np.isfinite(wplus).all():
            raise InputError("latent frame contains NaN or infinity")
        return self.encode_proxy(m.to_proxy(wplus), new_face=new_face)

    def encode_proxy(self, proxy: np.ndarray, *, new_face: bool = False) -> CodedFrame:
        """As :meth:`encode`, from the frame's proxy ``T(w)`` (C,) float (e.g. T run on a whole sequence at once, as
        the table fits do). InputError for values out of the model's range."""
        m, p = self.model, self.params
        y = proxy / self.unit
        # Checked in float, before any cast (a huge value wraps in int64), and written so that NaN fails too: finite
        # but huge W+ (up to 3e38) overflows inside T's coupling layers to inf and then NaN.
        if not (np.abs(y) < STATE_LIMIT).all():
            raise InputError("latent values too large for this model's step (proxy state out of range)")
        intra = new_face or self._force_intra or p.mode == "intra" or (p.keyframe_interval and self._since_intra + 1 >= p.keyframe_interval)
        since = 0 if intra else self._since_intra + 1
        residual = not intra and self.steps[0].residual is not None and since % p.g == 0
        previous = self.choice
        if self.rate is not None:
            start = intra or (since > 1 and (since - 1) % p.group == 0)  # an intra frame's group: it and `group` more
            self.rate.observe(y, intra, residual, self._state if start and not intra else None, self.choice,
                              self._previous)
            if start:
                self.choice = self.rate.choose(p.group + 1 if intra else p.group, intra, self.choice)
        st = self.steps[self.choice]
        k = st.multiple
        if intra:
            q = np.rint(y / k).astype(np.int64)
            parts = [(q, st.intra)]
            ptype = PacketType.NEW_FACE if new_face and self._state is not None else PacketType.INTRA
            self._state, self._force_intra = k * q, False
            self._previous = np.zeros_like(q)
        else:
            assert self._state is not None and self._prev_y is not None
            # closed mode, and the first frame after a change of step, code against the state (no drift carried over)
            ref = (self._state if p.mode == "closed" or self.choice != previous
                   else self._prev_y + p.damping * (self._state - self._prev_y))  # damping 0: the paper's open loop
            v = quantize((y - ref) / k, p.rounding_offset)
            state = self._state + k * v
            parts, ptype = [(v, st.difference(self._previous, self.choice != self._sent_step))], PacketType.INTER
            if residual:
                r = np.rint((y - state) / k).astype(np.int64)
                state = state + k * r
                parts.append((r, st.residual))
                ptype = PacketType.INTER_RESIDUAL
            repeat = self.repeats and ptype == PacketType.INTER and not v.any()
            if not repeat:  # a repeat leaves the context memory alone
                self._previous = v
            self._state = state
        self._since_intra = since
        if np.abs(self._state).max(initial=0) >= STATE_LIMIT:
            raise InputError("latent values too large for this model's step (proxy state out of range)")
        self._prev_y = y
        rated = p.rate_controlled
        if not intra and repeat:
            payload, ideal = b"", 0.0
        else:
            self._sent_step = self.choice
            payload = encode_parts(parts, (self.choice, len(self.steps)) if rated else None)
            ideal = sum(t.ideal_bits(v) for v, t in parts) + (math.log2(len(self.steps)) if rated else 0.0)
        if self.rate is not None:
            self.rate.spent(8 * len(pack(Packet(ptype, 0, 0, 0, payload), self.fps)), ideal)
        self.choices.append(self.choice)
        # the state is never changed in place
        return CodedFrame(ptype, payload, ideal, self._state, k * self.unit, m, p.step_index,
                          tuple(v for v, _ in parts))


class LatentStreamDecoder:
    """Stateful decoder: integer state in, W+ frame out. Inter frames need a preceding intra frame.

    ``version``: the stream's bitstream version (v2 payloads end with a check value, v1 payloads do not; v4/v6 payloads
    start with the step choice, ``params.step_set`` naming the steps).
    """

    def __init__(self, model: LatentCodecModel, params: StreamParams, version: int = VERSION) -> None:
        self.model, self.params, self.version = model, params, version
        if switches_steps(version) != params.rate_controlled:
            must = "must" if switches_steps(version) else "cannot"
            raise BitstreamError(f"a version {version} stream {must} switch steps")
        self.steps = step_tables(model, params)
        self._state: np.ndarray | None = None
        self._previous = np.zeros(model.channels, dtype=np.int64)  # the last decoded difference (temporal context)
        self._sent_step = 0  # the step of the last face packet with a payload (v6: a change makes a switch frame)

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

    def step(self, ptype: PacketType, payload: bytes) -> list[tuple[np.ndarray, CodingTable]]:
        """Decode one face packet into the integer state (no T⁻¹); returns its coded parts in coding order, each
        (values (C,) int64, its table): the intra values, or the latent difference then (inter+residual) the residual.
        BitstreamError for corrupt or misplaced data, or a packet this stream cannot hold; the state is then unchanged."""
        if ptype.is_frame and not ptype.is_intra and self._state is None:
            raise BitstreamError("inter frame without a preceding intra frame")
        if has_v5_tools(self.version) and ptype == PacketType.INTER and not payload:  # a repeat (v5, v6)
            return [(np.zeros(self.model.channels, dtype=np.int64), self.steps[0].difference(self._previous))]
        j, parts = self._chosen(ptype, payload)
        k = self.steps[j].multiple
        coded = sum(v for v, _ in parts)
        state = k * coded if ptype.is_intra else self._state + k * coded
        if np.abs(state).max(initial=0) >= STATE_LIMIT:
            raise BitstreamError("corrupted payload: latent state out of range")
        self._state = state
        self._previous = np.zeros_like(state) if ptype.is_intra else parts[0][0]
        self._sent_step = j
        return parts

    def _chosen(self, ptype: PacketType, payload: bytes) -> tuple[int, list[tuple[np.ndarray, CodingTable]]]:
        """(the packet's step: an index into ``self.steps``, its parts)."""
        if not ptype.is_frame:
            raise BitstreamError(f"{ptype.label} packet is not a face frame")
        if ptype == PacketType.INTER_RESIDUAL and self.steps[0].residual is None:
            raise BitstreamError("residual frame in a stream without residuals")

        def tables(j: int) -> list[CodingTable]:
            st = self.steps[j]
            if ptype.is_intra:
                return [st.intra]
            return ([st.difference(self._previous, j != self._sent_step)]
                    + ([st.residual] if ptype == PacketType.INTER_RESIDUAL else []))

        c = self.model.channels
        if switches_steps(self.version):
            j, values = decode_chosen(payload, len(self.steps), lambda j: [(t, c) for t in tables(j)])
        else:
            j, values = 0, decode_parts(payload, [(t, c) for t in tables(0)], check=self.version >= 2)
        return j, list(zip(values, tables(j)))

    def decode(self, ptype: PacketType, payload: bytes) -> np.ndarray:
        """One face packet → the (rows, width) float32 W+ frame; BitstreamError for corrupt or misplaced data."""
        self.step(ptype, payload)
        assert self._state is not None
        return self.model.from_state(self._state, self.params.step_index)
