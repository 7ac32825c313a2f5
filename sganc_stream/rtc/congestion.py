"""Congestion control of the live call: a delay-based bandwidth estimate at the receiver, fed back to the sender,
which keeps its stream within it by coarser quantization steps first and by skipping frames when even the coarsest
step is too dear (SPEC.md §8.8).

Receiver (:class:`BandwidthEstimator`): Google Congestion Control's delay-based controller (draft-ietf-rmcat-gcc-02
§5), in the variant libwebrtc runs today (a trendline filter in place of the draft's Kalman filter):

* **arrival-time filter** (:class:`TrendlineFilter`): per message, the delay gradient
  ``d_i = (t_i − t_{i−1}) − (T_i − T_{i−1})`` of arrival times ``t`` (the receiver's clock) against departure
  times ``T`` (the sender's clock: the packet's capture timestamp, SPEC §8.5). Only differences of each clock enter,
  so the two clocks need not be synchronised. The accumulated delay is smoothed (α = 0.9 per 33 ms of arrival time:
  libwebrtc's per group, at 30 groups/s) and the slope of a least-squares line through the last 20 (arrival,
  smoothed delay) points of the last 4 s is the trend: > 0 while a queue builds. The time-based smoothing and window
  (fitted from 4 points on) are this implementation's: at the 1–10 frames/s of a call under a cap, libwebrtc's per-
  group constants would smooth over many seconds and react long after the queue has filled.
* **over-use detector** (:class:`OveruseDetector`, §5.4): ``m = 60 · 4 · trend`` against an adaptive
  threshold ``γ`` (12.5 ms at first, ``γ += Δt · k · (|m| − γ)``, k = 0.0087 above it and 0.039 below, Δt at most
  10 ms per group, 6–600 ms); over-use when ``m > γ`` for more than 10 ms over two samples with a non-decreasing
  trend, under-use when ``m < −γ`` (the full gain from the start and the bounded Δt are this implementation's: see
  the class).
* **rate controller** (:class:`AimdRateControl`, §5.5): over-use → decrease to ``β = 0.85`` × the incoming rate;
  under-use → hold; normal → increase, multiplicatively (8 % per second) far from the rate of the last decrease,
  additively near it (half a message per response time, but at most 4 % per second: at a few kbit/s half a message
  per second would be 30 %); never above 1.5 × the incoming rate (over 2 s) + 1 kbit/s; a decrease at most once
  per second. The first estimate is β × the incoming rate over the first second (see :class:`AimdRateControl`).

The departure time is the capture timestamp, not a send time (the frame message carries none, so that a peer of
call protocol 2 without this feature still parses it; RTP's abs-send-time extension would be exact): the sender's
encode-time variation enters the gradient as noise, which the smoothing and the adaptive threshold absorb. No loss-
based controller (GCC §6): a random loss of 20 % (the benchmark's ``loss20``) is not congestion, redundancy repairs it,
and backing off for it would cost most of the frame rate; a drop-tail bottleneck queue raises the delay before it
drops, which the delay-based controller sees.

Known weakness (README, "Congestion control under a bandwidth cap"): the trendline has no size term, and at a few
messages per second a large message (an intra or residual frame, 10× an inter frame) crossing a narrow path delays the
next ones as a queue would, so the estimate settles below the path's rate (about two thirds of 30 kbit/s measured).

Sender (:class:`SendRate`): the last estimate received (the other side's feedback, SPEC §8.8) becomes the stream's
wire-rate budget: a leaky bucket of the wire bits sent (``rtc.wire``, the one wire-cost formula) skips a frame while
it holds more than ``BURST_S`` of the budget (send-side frame-rate reduction, as libwebrtc's frame dropper; a
retransmission, SPEC §8.7, passes the same test and waits ahead of the frames, as in libwebrtc's pacer), and, for
a rate-controlled stream (``--target-kbps``, now its ceiling), the budget in packet bits (wire bits less framing,
redundancy and transport overhead, measured) is the rate controller's target. Without any feedback (a peer that sends
none) the sender behaves as before: no budget.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from sganc_stream.latent.codec import TARGET_KBPS_RANGE

TREND_WINDOW = 20  # at most this many points in the trendline's least-squares fit ...
TREND_WINDOW_S = 4.0  # ... from at most this many seconds back ...
MIN_TREND_POINTS = 4  # ... fitted from this many on (libwebrtc waits for all 20: 13 s at 1.5 frames/s)
TREND_SMOOTHING = 0.9  # α of the smoothed accumulated delay, per SMOOTHING_MS of arrival time
SMOOTHING_MS = 33.3  # libwebrtc's α is per packet group: a 30 fps stream's frame interval
TREND_GAIN = 4.0  # threshold gain of the modified trend
MAX_DELTAS = 60  # the modified trend is trend × this × TREND_GAIN
GROUP_MS = 5.0  # messages sent within this burst form one group (GCC §5.2)
THRESHOLD_MS = (12.5, 6.0, 600.0)  # γ: initial, smallest, largest
K_UP, K_DOWN = 0.0087, 0.039  # γ's adaptation per ms above / below it
MAX_ADAPT_OFFSET_MS = 15.0  # an |m| this far above γ does not move γ (a spike)
ADAPT_STEP_MS = 10.0  # γ moves at most k × this per group (libwebrtc: k × min(Δt, 100 ms); see OveruseDetector)
OVERUSE_TIME_MS = 10.0
BETA = 0.85  # decrease factor
INCREASE_PER_S = 1.08  # multiplicative increase, per second
RESPONSE_S = 1.0  # assumed response time of the loop: feedback every 0.5 s plus the path's queue
MAX_ABOVE_INCOMING = (1.5, 1000.0)  # the estimate never exceeds a × incoming + b bit/s
MIN_BPS = 2000.0  # the estimate never goes below this
RATE_WINDOW_S = 2.0  # incoming rate: bits arrived over this window (a few messages per second under a cap) ...
RATE_MIN_S = 1.0  # ... measured from this long after the first arrival on
FEEDBACK_S = 0.5  # a feedback message at least this often ...
FEEDBACK_MIN_S = 0.1  # ... and at once (at most this often) when the estimate falls by DECREASE_REPORT or more
DECREASE_REPORT = 0.03
BURST_S = 0.1  # the sender's bucket lets this much of the budget go at once
# A retransmission may go while the bucket holds up to this much of the budget (frames then wait until it is back
# under BURST_S, so the average stays the budget): the receiver gives a gap up after three NACKs a few tens of ms
# apart, and at 10 kbit/s one 112-byte answer behind a frame would otherwise wait 80–150 ms and lose that race
# (libwebrtc's pacer likewise sends retransmissions first and paces at 2.5x the target).
REPAIR_BURST_S = 0.5


class TrendlineFilter:
    """Delay-gradient trend of a stream of messages (GCC §5.3 as libwebrtc's trendline estimator; see module doc).

    ``add(departure_ms, arrival_ms)`` takes one message (sender's and receiver's clocks, ms) and returns the delay
    gradient's group delta (ms) when a group completed, else None. ``trend``: slope of the smoothed accumulated delay
    over arrival time (ms per ms, dimensionless); ``deltas``: group deltas seen (capped at 1000).
    """

    def __init__(self) -> None:
        self.trend = 0.0
        self.deltas = 0
        self._group: tuple[float, float] | None = None  # (first departure, last arrival) of the group being filled
        self._group_departure = 0.0
        self._prev: tuple[float, float] | None = None  # (departure, arrival) of the last complete group
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival: float | None = None
        self._points: deque[tuple[float, float]] = deque(maxlen=TREND_WINDOW)

    def add(self, departure_ms: float, arrival_ms: float) -> tuple[float, float] | None:
        """One message; returns ``(send_delta_ms, delay_gradient_ms)`` of the group it completed, or None (the group
        goes on, or the message was out of order and is left out)."""
        if self._group is None:
            self._group, self._group_departure = (departure_ms, arrival_ms), departure_ms
            return None
        first, _ = self._group
        if departure_ms < self._group_departure:  # reordered: older than the group being filled
            return None
        if departure_ms - first <= GROUP_MS:  # the same burst
            self._group, self._group_departure = (first, max(arrival_ms, self._group[1])), departure_ms
            return None
        done = (self._group_departure, self._group[1])
        self._group, self._group_departure = (departure_ms, arrival_ms), departure_ms
        if self._prev is None:
            self._prev = done
            return None
        send_delta, recv_delta = done[0] - self._prev[0], done[1] - self._prev[1]
        self._prev = done
        gradient = recv_delta - send_delta
        self.deltas = min(self.deltas + 1, 1000)
        self._accumulated += gradient
        alpha = TREND_SMOOTHING ** (max(recv_delta, 0.0) / SMOOTHING_MS)
        self._smoothed = alpha * self._smoothed + (1 - alpha) * self._accumulated
        if self._first_arrival is None:
            self._first_arrival = done[1]
        x = done[1] - self._first_arrival
        self._points.append((x, self._smoothed))
        while self._points[0][0] < x - TREND_WINDOW_S * 1000:
            self._points.popleft()
        if len(self._points) >= MIN_TREND_POINTS:
            self.trend = _slope(self._points)
        return send_delta, gradient


def _slope(points: deque[tuple[float, float]]) -> float:
    """Least-squares slope of ``y`` over ``x``; 0 when all ``x`` are equal."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


OVERUSE, NORMAL, UNDERUSE = "overuse", "normal", "underuse"


class OveruseDetector:
    """GCC's over-use detector with its adaptive threshold (§5.4; constants in the module doc).

    ``m`` has its full gain (60 × 4) as soon as the trend is fitted, where libwebrtc's gain grows with the number of
    groups seen, min(n, 60): 2 s at 30 groups per second, but 20 s or more at a few frames per second, long after a
    short drop-tail queue has filled (and a full queue shows no gradient, only losses).

    γ's step per group is bounded by ``ADAPT_STEP_MS`` of time, not libwebrtc's 100 ms: at the 1–3 groups per second
    of a call under a cap, k_up × 100 ms = 0.87 lets γ catch up with m within one group (every over-use is hidden)
    and k_down × 100 ms = 3.9 overshoots to the floor; with 10 ms per group γ follows over a few seconds, as
    libwebrtc's does at 30 groups per second."""

    def __init__(self) -> None:
        self.threshold = THRESHOLD_MS[0]
        self.state = NORMAL
        self.modified = 0.0
        self._time_over = -1.0
        self._count = 0
        self._prev_trend = 0.0
        self._last_update: float | None = None

    def detect(self, trend: float, deltas: int, send_delta_ms: float, now_ms: float) -> str:
        """The signal after one group: ``trend`` and ``deltas`` of :class:`TrendlineFilter`, the group's send delta,
        the receiver's clock (ms)."""
        if deltas < MIN_TREND_POINTS:
            return self.state
        m = MAX_DELTAS * trend * TREND_GAIN
        self.modified = m
        if m > self.threshold:
            self._time_over = send_delta_ms / 2 if self._time_over < 0 else self._time_over + send_delta_ms
            self._count += 1
            if self._time_over > OVERUSE_TIME_MS and self._count > 1 and trend >= self._prev_trend:
                self._time_over, self._count = 0.0, 0
                self.state = OVERUSE
        elif m < -self.threshold:
            self._time_over, self._count = -1.0, 0
            self.state = UNDERUSE
        else:
            self._time_over, self._count = -1.0, 0
            self.state = NORMAL
        self._prev_trend = trend
        self._adapt(m, now_ms)
        return self.state

    def _adapt(self, m: float, now_ms: float) -> None:
        if self._last_update is None:
            self._last_update = now_ms
        if abs(m) > self.threshold + MAX_ADAPT_OFFSET_MS:
            self._last_update = now_ms
            return
        k = K_DOWN if abs(m) < self.threshold else K_UP
        dt = min(now_ms - self._last_update, ADAPT_STEP_MS)
        self.threshold = min(max(self.threshold + k * (abs(m) - self.threshold) * dt, THRESHOLD_MS[1]), THRESHOLD_MS[2])
        self._last_update = now_ms


class AimdRateControl:
    """GCC's remote rate controller (§5.5): the estimate ``bps`` (wire bit/s) moves with the detector's signal.

    None until the first :meth:`update` with a measured incoming rate, which starts it at β × that rate, as after an
    over-use (GCC starts from a configured rate): the sender was unconstrained until then, and a queue it built at a
    drop-tail bottleneck shows no delay gradient once full, only losses, so it must be drained, not held. A sender
    that had less to send than the path carries regains the rate within seconds by the increase.
    """

    def __init__(self) -> None:
        self.bps: float | None = None
        self.state = "increase"
        self._avg_max: float | None = None  # mean incoming rate at decreases (kbit/s), and its variance
        self._var_max = 0.4
        self._last_s: float | None = None
        self._last_decrease_s = -math.inf

    def update(self, signal: str, incoming_bps: float, now_s: float, message_bits: float) -> float | None:
        """One step at ``now_s`` (s): the detector's ``signal``, the incoming wire rate (bit/s), the mean message size
        (bits, for the additive increase); returns the estimate (bit/s). A decrease acts at most once per
        ``RESPONSE_S`` (libwebrtc's once per round-trip time, with a fixed response time): the trend lags the queue,
        and one decrease needs time to show. libwebrtc also decreases at once when the incoming rate is below half the
        estimate; at one or two messages per second the incoming rate is that low whenever the sender skips a frame or
        a message is lost, and each such decrease (to β × that rate) would compound, so this one does not."""
        dt = 0.0 if self._last_s is None else min(now_s - self._last_s, 1.0)
        self._last_s = now_s
        a, b = MAX_ABOVE_INCOMING
        if self.bps is None:
            if incoming_bps <= 0:
                return None
            self.bps = max(BETA * incoming_bps, MIN_BPS)
        if signal == OVERUSE:
            self.state = "decrease"
        elif signal == UNDERUSE:
            self.state = "hold"
        elif self.state != "increase":
            self.state = "increase"
            return self.bps  # from hold or decrease: increase from the next update on
        if self.state == "decrease":
            if now_s - self._last_decrease_s >= RESPONSE_S:
                self.bps = max(min(BETA * incoming_bps, self.bps), MIN_BPS)
                self._update_max(incoming_bps / 1000)
                self._last_decrease_s = now_s
            self.state = "hold"
        elif self.state == "increase":
            kbps = incoming_bps / 1000
            if self._avg_max is not None and kbps > self._avg_max + 3 * math.sqrt(self._var_max * self._avg_max):
                self._avg_max = None  # well above the old limit: the path changed
            near = self._avg_max is not None and \
                self.bps / 1000 < self._avg_max + 3 * math.sqrt(self._var_max * self._avg_max)
            if near:  # at most half the multiplicative rate: at a few kbit/s half a message per second is 30 %
                self.bps += min(0.5 * message_bits / RESPONSE_S, 0.5 * (INCREASE_PER_S - 1) * self.bps) * dt
            else:
                self.bps *= INCREASE_PER_S ** dt
            self.bps = max(min(self.bps, a * incoming_bps + b), MIN_BPS)
        return self.bps

    def _update_max(self, kbps: float) -> None:
        if self._avg_max is None:
            self._avg_max = kbps
            return
        self._avg_max = 0.95 * self._avg_max + 0.05 * kbps
        norm = max(self._avg_max, 1.0)
        self._var_max = min(max(0.95 * self._var_max + 0.05 * (self._avg_max - kbps) ** 2 / norm, 0.4), 2.5)


class IncomingRate:
    """Wire bits that arrived over the last ``RATE_WINDOW_S`` (bit/s), and the mean message size (bits)."""

    def __init__(self) -> None:
        self._arrivals: deque[tuple[float, int]] = deque()
        self._bits = 0
        self.mean_bits = 0.0
        self._start: float | None = None

    def add(self, now_s: float, bits: int) -> None:
        """A message of ``bits`` arrived at ``now_s``; the first one only starts the clock (its bits arrived before)."""
        if self._start is None:
            self._start = now_s
            self.mean_bits = bits
            return
        self._arrivals.append((now_s, bits))
        self._bits += bits
        self.mean_bits = bits if self.mean_bits == 0 else 0.9 * self.mean_bits + 0.1 * bits
        self._trim(now_s)

    def bps(self, now_s: float) -> float:
        """The rate; 0 before ``RATE_MIN_S`` have passed since the first arrival (then over the time so far)."""
        self._trim(now_s)
        if self._start is None or now_s - self._start < RATE_MIN_S:
            return 0.0
        return self._bits / min(RATE_WINDOW_S, now_s - self._start)

    def _trim(self, now_s: float) -> None:
        while self._arrivals and self._arrivals[0][0] <= now_s - RATE_WINDOW_S:
            self._bits -= self._arrivals.popleft()[1]


@dataclass(frozen=True)
class Estimate:
    """What a feedback message reports (SPEC §8.8): the estimate and the incoming rate, wire bit/s."""

    n: int  # feedback count of the connection, from 0 (the channel is unordered: a higher one is newer)
    estimate_bps: int
    incoming_bps: int


class BandwidthEstimator:
    """Receiver side: messages in (``on_message``), feedback out (``feedback``); see the module doc.

    Clocks: ``departure_ms`` is the sender's (a packet's capture timestamp), every ``now_s`` the receiver's monotonic
    clock in seconds.
    """

    def __init__(self) -> None:
        self.trend = TrendlineFilter()
        self.detector = OveruseDetector()
        self.rate = AimdRateControl()
        self.incoming = IncomingRate()
        self.signal = NORMAL
        self.sent = 0
        self._reported: float | None = None
        self._last_report_s = -math.inf

    def on_message(self, now_s: float, wire_bytes: int, departure_ms: float | None) -> None:
        """Any message of the other side's stream: its wire size (``rtc.wire.wire_bytes``), and its packet's capture
        timestamp when it has one (a late message does not). Each completed group moves the estimate."""
        self.incoming.add(now_s, 8 * wire_bytes)
        if departure_ms is None:
            return
        group = self.trend.add(departure_ms, now_s * 1000)
        if group is None:
            return
        self.signal = self.detector.detect(self.trend.trend, self.trend.deltas, group[0], now_s * 1000)
        self.rate.update(self.signal, self.incoming.bps(now_s), now_s, self.incoming.mean_bits)

    def feedback(self, now_s: float) -> Estimate | None:
        """The feedback message due now, if any: every ``FEEDBACK_S``, and at once (at most every ``FEEDBACK_MIN_S``)
        after the estimate fell by ``DECREASE_REPORT`` or more since the last one."""
        bps = self.rate.bps
        if bps is None:
            return None
        since = now_s - self._last_report_s
        fell = self._reported is not None and bps < (1 - DECREASE_REPORT) * self._reported
        if since < FEEDBACK_MIN_S or (since < FEEDBACK_S and not fell):
            return None
        self._reported, self._last_report_s = bps, now_s
        self.sent += 1
        return Estimate(self.sent - 1, round(bps), round(self.incoming.bps(now_s)))


class SendRate:
    """Sender side: the other side's estimate as a wire-rate budget (see the module doc). Thread-safe: the encode
    thread asks :meth:`may_send`, the event loop reports :meth:`sent` and :meth:`on_feedback`.

    ``ceiling_kbps``: the user's ``--target-kbps`` (packet kbit/s) or None (a fixed-step stream: the budget only skips
    frames). Clock: ``now_s``, seconds of any monotonic clock.
    """

    def __init__(self, ceiling_kbps: float | None) -> None:
        self.ceiling_kbps = ceiling_kbps
        self.estimate: Estimate | None = None
        # frames offered to :meth:`may_send` per second (mean): the encoder's pace while it codes, the camera's while
        # frames are skipped (a skipped frame frees the encoder at once), which pushes the rate controller, whose
        # per-frame budget is the target over this rate, to coarser steps while frames are being skipped
        self.offered_fps: float | None = None
        self._lock = threading.Lock()
        self._level = 0.0  # bits in the bucket
        self._last_s: float | None = None
        self._last_offer_s: float | None = None
        self._wire = 0.0  # mean wire bits and packet bits of a frame message
        self._packet = 0.0
        self._repair_waiting = False  # a retransmission waits for the bucket: frames give way (may_send)

    @property
    def budget_bps(self) -> float | None:
        """The wire-rate budget (bit/s): the last estimate received, at least ``MIN_BPS`` (an estimate of 0 from a
        faulty peer would stop the stream for good); None before any (the sender is unconstrained)."""
        est = self.estimate
        return None if est is None else max(float(est.estimate_bps), MIN_BPS)

    def on_feedback(self, fb: Estimate) -> bool:
        """Take a feedback message; False for one not newer than the last (the channel is unordered)."""
        with self._lock:
            if self.estimate is not None and fb.n <= self.estimate.n:
                return False
            self.estimate = fb
            return True

    def _drain(self, now_s: float) -> None:
        budget = self.budget_bps
        if self._last_s is not None and budget is not None:
            self._level = max(0.0, self._level - budget * (now_s - self._last_s))
        self._last_s = now_s

    def _admits(self, now_s: float, burst_s: float = BURST_S) -> bool:
        self._drain(now_s)
        budget = self.budget_bps
        return budget is None or self._level <= budget * burst_s

    def may_send(self, now_s: float) -> bool:
        """Whether the frame offered now may be coded: no budget yet, or the bucket holds at most ``BURST_S`` of it
        and no retransmission is waiting for it (:meth:`may_repair`)."""
        with self._lock:
            if self._last_offer_s is not None and now_s > self._last_offer_s:
                fps = 1.0 / (now_s - self._last_offer_s)
                self.offered_fps = fps if self.offered_fps is None else 0.9 * self.offered_fps + 0.1 * fps
            self._last_offer_s = now_s
            return self._admits(now_s) and not self._repair_waiting

    def may_repair(self, now_s: float) -> bool:
        """Whether a retransmission (SPEC §8.7) may go now: no budget, or the bucket holds at most ``REPAIR_BURST_S``
        of it (a frame needs ``BURST_S``); it is charged as a frame is, so frames repay it. When it may not, it waits ahead of the
        frames (as retransmissions do in libwebrtc's pacer): :meth:`may_send` refuses frames until the caller sends it
        (:meth:`repaired`) or gives it up (:meth:`drop_repair`)."""
        with self._lock:
            ok = self._admits(now_s, REPAIR_BURST_S)
            self._repair_waiting = not ok
            return ok

    def drop_repair(self) -> None:
        """The retransmission that waited is not sent after all: frames may go again."""
        with self._lock:
            self._repair_waiting = False

    def sent(self, now_s: float, wire_bytes: int, packet_bytes: int) -> None:
        """A frame message went out: ``wire_bytes`` on the wire for a ``packet_bytes`` packet (payload + framing)."""
        with self._lock:
            self._charge(now_s, wire_bytes, packet_bytes)

    def repaired(self, now_s: float, wire_bytes: int) -> None:
        """A retransmission went out: ``wire_bytes`` on the wire, overhead to the rate controller as redundancy is
        (no packet bits); frames may go again."""
        with self._lock:
            self._repair_waiting = False
            self._charge(now_s, wire_bytes, 0)

    def _charge(self, now_s: float, wire_bytes: int, packet_bytes: int) -> None:
        self._drain(now_s)
        if self.budget_bps is not None:  # before any budget nothing accumulates: the bucket starts empty
            self._level += 8 * wire_bytes
        w, p = 8 * wire_bytes, 8 * packet_bytes
        if self._wire == 0:
            self._wire, self._packet = w, p
        else:
            self._wire, self._packet = 0.9 * self._wire + 0.1 * w, 0.9 * self._packet + 0.1 * p

    def target_kbps(self) -> float | None:
        """The rate controller's target now (packet kbit/s): the budget less the measured share of framing, redundancy
        and transport overhead, at most the ceiling; None for a fixed-step stream or before any budget."""
        budget = self.budget_bps
        if self.ceiling_kbps is None or budget is None or self._wire == 0:
            return None
        return min(self.ceiling_kbps, max(budget * self._packet / self._wire / 1000, TARGET_KBPS_RANGE[0]))
