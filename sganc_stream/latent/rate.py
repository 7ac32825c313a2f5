"""Rate control: pick the quantization step of each group of frames so that the stream keeps a target bit rate.

A rate-controlled stream (bitstream v4) switches among a list of step presets ``Δ_j = m_j · Δ_0`` (integer multiples
``m_j`` of the finest one, the state's unit). The step may change only at the start of a **group**: an intra frame
(its group is it and the next g face frames), or the frame after a residual frame (open mode, groups of g face
frames), or every ``RATE_GROUP`` face frames in closed and intra mode and open mode without residuals. So a group in open mode is exactly one drift-refresh period:
it starts after a residual and ends with the next one, which corrects the group's drift in the group's own step.

The controller is the classic one-pass, buffer-based scheme of video encoders: a virtual buffer (the leaky bucket
of the hypothetical reference decoder, ITU-T H.264 Annex C; the "virtual buffer" of MPEG-2 Test Model 5, §10) fills
with the bits each packet actually costs and drains at the target rate; at each group start the encoder picks the
step whose predicted cost for the group is nearest to the group's share of the target minus a fraction of the
buffer's excess (repaid over ``REPAY_S`` seconds). The prediction is measured, not modelled: for every step of the list the
encoder keeps a *shadow* quantizer on the same proxy values (integers only: what this stream would have sent had
it stayed at that step since its last intra frame) and its information content under that step's frozen tables.
So R(Δ) is known on the current content for every Δ at once, as a multi-pass encoder would know it, without
look-ahead or latency. The prediction for the next group is the mean over the groups so far with weights halving per
newer group (x264's "blurred complexity" of ratecontrol.c: a step chosen because the last group was calm would
otherwise be chosen on a low estimate; measured with temporal context, where calm and moving groups differ most,
10-s windows within ±10 % at 40 kbit/s went from 29 / 41 to 39 / 41, benchmarks/rate_control.py). The group's
first frame is costed exactly on the frame itself at every step, so the switch
frame that a change of step needs (coded against the state: from a coarse step to a fine one it carries the whole
coarse quantization error, up to about an intra frame's bits) weighs on the choice; and, as x264's ``--qpstep``
limits QP changes, the step moves at most ``MAX_STEP_CHANGE`` presets per group. Packet framing and the coder's tail word are added as the measured mean of (packet bits −
information content). With discrete steps the chosen step alternates between the two presets around the target and
the buffer keeps the average; the buffer is clamped to ±``REPAY_S`` seconds of the target, so a target outside the
presets' range (cheaper than the coarsest, dearer than the finest) saturates instead of winding up.

What is counted: face packets' payload plus packet framing (what a .sgnc file and a data-channel message carry),
not the container header or the transport (SCTP/DTLS/UDP/IP) overhead of a call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sganc_stream.entropy.tables import CodingTable
from sganc_stream.latent.context import ContextTables
from sganc_stream.latent.quantize import ROUNDING_OFFSET, quantize

RATE_GROUP = 10  # face frames per group where no residual period sets it (closed, intra, open with g = 0)
REPAY_S = 1.0  # seconds over which the buffer's excess is repaid; the buffer is clamped to this many seconds of budget
INTRA_PER_INTER = 8.0  # before any inter frame was measured: an inter frame is predicted at 1/8 of an intra frame
MAX_STEP_CHANGE = 2  # presets the step may move per group (as x264's --qpstep limits QP changes between frames)


@dataclass(frozen=True)
class StepTables:
    """The frozen tables of one step of a stream: intra, difference, and residual (None without residuals)."""

    multiple: int  # this step / the stream's unit step
    intra: CodingTable
    diff: CodingTable
    residual: CodingTable | None
    context: ContextTables | None = None  # temporal-context difference tables (bitstream v5), used instead of ``diff``

    def difference(self, previous: np.ndarray, switch: bool = False) -> CodingTable:
        """The table a latent difference is coded with, given the previous decoded difference (C,) int64; ``switch``:
        the frame changes the stream's step (v6: a switch frame is coded with the factorized table, SPEC §4.3)."""
        return self.diff if self.context is None or switch else self.context.table(previous)


class RateController:
    """Chooses a step (an index into ``steps``, finest first) per group; see the module doc.

    ``target_kbps``: packet kbit/s (payload + framing); ``fps``: frame rate, to turn it into bits per frame;
    ``closed``: the stream's inter frames code ``y − state`` (closed mode) rather than ``y_t − y_{t−1}`` (open);
    ``repeats``: an all-zero difference costs an empty payload (bitstream v5/v6); ``rounding_offset``: the
    stream's quantizer of differences (:mod:`sganc_stream.latent.quantize`), which the shadows use too. With temporal context (the steps'
    ``context`` tables) each shadow quantizer keeps its own previous difference, so its cost is the context model's.
    """

    def __init__(self, steps: list[StepTables], target_kbps: float, fps: float, closed: bool,
                 repeats: bool = False, rounding_offset: float = ROUNDING_OFFSET) -> None:
        self.steps, self.closed, self.repeats, self.offset = steps, closed, repeats, rounding_offset
        self.retarget(target_kbps, fps)
        self.buffer = 0.0  # bits spent − bits budgeted so far (positive: over budget)
        self.overhead = 0.0  # mean packet bits − information content, per packet
        self.packets = 0
        self._shadow: list[np.ndarray | None] = [None] * len(steps)
        self._shadow_diff: list[np.ndarray | None] = [None] * len(steps)  # each shadow's previous difference (context)
        self._prev_y: np.ndarray | None = None
        self._group_bits = np.zeros(len(steps))  # shadow inter bits of the current group, per step
        self._group_frames = 0
        self.inter_bits: np.ndarray | None = None  # predicted bits of an inter frame at each step (blurred group means)
        self.intra_bits = np.zeros(len(steps))  # information content of the last intra frame at each step
        self._first = np.zeros(len(steps))  # this inter frame's cost to the stream at each step (switch frames included)

    def retarget(self, target_kbps: float, fps: float) -> None:
        """A new target (packet kbit/s at ``fps`` frames per second), e.g. from the call's bandwidth estimate; the
        buffer and the measurements made so far are kept."""
        self.frame_budget = target_kbps * 1000.0 / fps  # bits per frame
        self.limit = REPAY_S * target_kbps * 1000.0  # buffer clamp, bits
        self.repay_frames = max(1.0, REPAY_S * fps)

    def observe(self, y: np.ndarray, intra: bool, residual: bool, state: np.ndarray | None = None,
                current: int = 0, previous: np.ndarray | None = None) -> None:
        """Run the shadow quantizers on one face frame's proxy ``y`` (C,) float, in units of the unit step, coded as an
        intra frame or an inter frame (with a residual): per step, the bits it would have cost. With the stream's
        ``state``, ``current`` step and ``previous`` difference (an inter frame that may start a group): also what this
        frame costs the stream itself at each step, a change of step coding it against the state (the encoder's
        switch frame)."""
        if state is not None and self._prev_y is not None:
            prev = np.zeros(len(y), np.int64) if previous is None else previous
            refs = [state if self.closed or j != current else self._prev_y for j in range(len(self.steps))]
            self._first = np.array([self._difference_bits(st, quantize((y - ref) / st.multiple, self.offset), prev,
                                                          residual, j != current)
                                    for j, (st, ref) in enumerate(zip(self.steps, refs))])
        bits = np.zeros(len(self.steps))
        for j, st in enumerate(self.steps):
            m, s = st.multiple, self._shadow[j]
            if intra or s is None:
                q = np.rint(y / m)
                bits[j] = st.intra.ideal_bits(q)
                s = m * q
                self._shadow_diff[j] = np.zeros(len(y), np.int64)
            else:
                v = quantize((y - (s if self.closed else self._prev_y)) / m, self.offset)
                prev = self._shadow_diff[j]
                assert prev is not None
                bits[j] = self._difference_bits(st, v, prev, residual)
                if not (self.repeats and not residual and not v.any()):  # a repeat leaves the context memory alone
                    self._shadow_diff[j] = v.astype(np.int64)
                s = s + m * v
                if residual and st.residual is not None:
                    r = np.rint((y - s) / m)
                    bits[j] += st.residual.ideal_bits(r)
                    s = s + m * r
            self._shadow[j] = s
        self._prev_y = y
        if intra:
            self.intra_bits = bits
        else:
            self._group_bits += bits
            self._group_frames += 1

    def choose(self, frames: int, intra: bool, current: int = 0) -> int:
        """The step for a group of ``frames`` face frames starting now (``intra``: it starts with an intra frame, whose
        cost at each step :meth:`observe` has just measured; otherwise ``current`` is the step so far and the first frame's
        cost at each step, a switch frame's where the step changes, is measured too): the step whose predicted cost is
        nearest the budget, within MAX_STEP_CHANGE presets of ``current`` unless an intra frame starts the group."""
        if self._group_frames:  # the group just ended: its mean inter cost predicts the next one
            mean = self._group_bits / self._group_frames
            self.inter_bits = mean if self.inter_bits is None else 0.5 * (self.inter_bits + mean)
            self._group_bits[:], self._group_frames = 0.0, 0
        inter = self.inter_bits if self.inter_bits is not None else self.intra_bits / INTRA_PER_INTER
        if intra:
            predicted = (frames - 1) * (inter + self.overhead) + self.intra_bits + self.overhead
        else:  # a switch frame's extra cost, measured on this frame, is spread over the repayment horizon's groups
            extra = np.maximum(self._first - inter, 0.0) * frames / self.repay_frames
            predicted = frames * (inter + self.overhead) + extra
        allowed = frames * self.frame_budget - self.buffer * frames / self.repay_frames
        if not intra:  # an intra frame starts afresh; otherwise the step moves by at most MAX_STEP_CHANGE presets
            far = np.abs(np.arange(len(self.steps)) - current) > MAX_STEP_CHANGE
            predicted = np.where(far, np.inf, predicted)
        return int(np.argmin(np.abs(predicted - allowed)))  # the nearest; ties: the finer step

    def _difference_bits(self, st: StepTables, v: np.ndarray, previous: np.ndarray, residual: bool,
                         switch: bool = False) -> float:
        """Information content of a latent difference ``v`` at step ``st`` after the difference ``previous``
        (``switch``: in a frame that changes the step); 0 for a repeat (an all-zero difference of a frame without a residual, where
        the stream sends repeats)."""
        return 0.0 if self.repeats and not residual and not v.any() else st.difference(previous, switch).ideal_bits(v)

    def spent(self, packet_bits: int, ideal_bits: float) -> None:
        """Account one coded face packet: its bits (payload + framing) and its information content."""
        self.packets += 1
        self.overhead += (packet_bits - ideal_bits - self.overhead) / self.packets
        self.buffer = float(np.clip(self.buffer + packet_bits - self.frame_budget, -self.limit, self.limit))
