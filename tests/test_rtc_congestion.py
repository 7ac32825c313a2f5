"""Congestion control (rtc.congestion, SPEC §8.8): the receiver's delay-based estimate on synthetic arrival traces,
the sender's budget, and the feedback message on the wire."""

from __future__ import annotations

import random

import msgpack
import pytest

from sganc_stream.rtc.congestion import (MIN_BPS, OVERUSE, BandwidthEstimator, Estimate, SendRate)
from sganc_stream.rtc.transport import (Hello, MalformedFeedback, feedback_message, parse_message)
from sganc_stream.latent.rate import RateController, StepTables

MODEL_ID = "ab" * 32


def open_loop(delays_ms: list[float], interval_ms: float = 100.0, wire: int = 400) -> list[tuple[float, str, float]]:
    """Feed one message per ``interval_ms`` whose one-way delay is ``delays_ms[i]``; per message (time s, the detector's
    signal, the estimate bit/s or 0). The receiver's clock starts 1000 s away from the sender's: only differences
    count."""
    est = BandwidthEstimator()
    out = []
    for i, d in enumerate(delays_ms):
        departure = 5_000_000.0 + i * interval_ms
        now_s = 1000.0 + (i * interval_ms + d) / 1000
        est.on_message(now_s, wire, departure)
        out.append((now_s - 1000.0, est.signal, est.rate.bps or 0.0))
    return out


def test_constant_delay_with_jitter_is_steady() -> None:
    """60 ms path delay ± 10 ms of jitter for 30 s: never an over-use; the estimate starts at β × the incoming rate
    (10 × 400 B/s = 32 kbit/s), is above it within 5 s and never falls below it again (and stays within 1.5 × that
    + 1 kbit/s: the sender has not shown that it can send more)."""
    rng = random.Random(1)
    trace = open_loop([60 + rng.uniform(-10, 10) for _ in range(300)])
    assert all(signal != OVERUSE for _, signal, _ in trace)
    rates = [bps for _, _, bps in trace if bps]
    assert len(rates) > 250 and rates[0] == pytest.approx(0.85 * 32_000, rel=0.06)
    later = [bps for t, _, bps in trace if t > 5]
    assert 32_000 <= min(later) and max(later) <= 1.5 * 34_000 + 1000


def test_rising_delay_is_an_overuse_and_the_estimate_falls_below_the_incoming_rate() -> None:
    """10 s steady, then a queue building 20 ms per 100 ms: over-use within 1 s of the rise, and the estimate drops
    to β × the incoming rate (32 kbit/s) or less."""
    trace = open_loop([50.0] * 100 + [50.0 + 20 * k for k in range(1, 40)])
    rise = 10.0
    first = next(t for t, signal, _ in trace if signal == OVERUSE)
    assert rise < first <= rise + 1.0
    after = [bps for t, _, bps in trace if t > first]
    assert max(after) <= 0.86 * 32_000


def bottleneck(capacity_bps: list[tuple[float, float]], seconds: float, *, fps: float = 10.0,
               message_bytes: int = 400, queue_s: float = 1.0) -> list[dict[str, float]]:
    """A closed loop in 10 ms steps: a sender offering ``fps`` messages of ``message_bytes`` wire bytes, skipping frames
    as its :class:`SendRate` says, through a drop-tail bottleneck (capacity ``capacity_bps`` [(from s, bit/s), ...], at
    most ``queue_s`` of queue, 20 ms of propagation) to a :class:`BandwidthEstimator`, whose feedback reaches the sender
    50 ms after it leaves. Per second: the largest queueing delay (ms), messages dropped by the queue, the estimate and
    the sent rate (bit/s)."""
    est, send = BandwidthEstimator(), SendRate(None)
    link_free = 0.0
    arrivals: list[tuple[float, float]] = []  # (arrival s, departure ms), in order
    feedback: list[tuple[float, Estimate]] = []
    log: list[dict[str, float]] = []
    second = {"delay_ms": 0.0, "dropped": 0, "sent": 0.0}
    per_frame = round(100 / fps)
    for step in range(round(seconds * 100)):
        now = step / 100
        while feedback and feedback[0][0] <= now:
            send.on_feedback(feedback.pop(0)[1])
        if step % per_frame == 0 and send.may_send(now):
            cap = [c for t, c in capacity_bps if t <= now][-1]
            send.sent(now, message_bytes, message_bytes // 2)
            second["sent"] += 8 * message_bytes
            queued = max(link_free - now, 0.0)
            if queued > queue_s:
                second["dropped"] += 1
            else:
                second["delay_ms"] = max(second["delay_ms"], queued * 1000)
                link_free = max(link_free, now) + 8 * message_bytes / cap
                arrivals.append((link_free + 0.02, now * 1000))
        while arrivals and arrivals[0][0] <= now:
            est.on_message(now, message_bytes, arrivals.pop(0)[1])
        fb = est.feedback(now)
        if fb is not None:
            feedback.append((now + 0.05, fb))
        if (step + 1) % 100 == 0:
            log.append({**second, "estimate": est.rate.bps or 0.0})
            second = {"delay_ms": 0.0, "dropped": 0, "sent": 0.0}
    return log


def test_a_cap_keeps_the_queue_short_and_the_estimate_recovers_after_it_lifts() -> None:
    """32 kbit/s offered into 8 kbit/s (a 1 s drop-tail queue) for 60 s, then 64 kbit/s: under the cap the sender
    skips frames, so after the first 15 s the queue drops nothing and stays short; once the cap lifts the estimate
    climbs past the old cap and the sender sends more."""
    log = bottleneck([(0.0, 8000.0), (60.0, 64000.0)], 100.0)
    capped, free = log[15:60], log[80:]
    assert sum(s["dropped"] for s in capped) == 0
    assert sum(s["delay_ms"] for s in capped[-30:]) / 30 < 500, [round(s["delay_ms"]) for s in capped]
    assert 0.6 * 8000 <= sum(s["sent"] for s in capped) / len(capped) <= 1.05 * 8000
    assert min(s["estimate"] for s in free) > 1.5 * 8000
    assert sum(s["sent"] for s in free) / len(free) > 2 * 8000
    assert max(s["delay_ms"] for s in free) < 100


def test_feedback_messages_round_trip() -> None:
    for fb in (Estimate(0, int(MIN_BPS), 0), Estimate(7, 123_456, 98_765), Estimate(2**31, 2**39, 1)):
        data = feedback_message(fb)
        assert data[0] == 0x84  # a fixmap: a control message (SPEC §8.3)
        assert parse_message(data, None) == fb
        assert len(data) <= 40


@pytest.mark.parametrize("fields", [
    {"fb": 1, "bwe": 10_000},  # no rx
    {"fb": 1, "bwe": -5, "rx": 0},
    {"fb": 1, "bwe": 10_000.5, "rx": 0},
    {"fb": True, "bwe": 10_000, "rx": 0},
    {"fb": 1, "bwe": b"1000", "rx": 0},
    {"fb": 1, "bwe": 1 << 40, "rx": 0},
    {"fb": None, "bwe": 1, "rx": 0},
])
def test_malformed_feedback_is_one_error(fields: dict[str, object]) -> None:
    with pytest.raises(MalformedFeedback, match="malformed feedback message"):
        parse_message(msgpack.packb({"sganc": 2, **fields}, use_bin_type=True), None)


def test_the_hello_says_whether_a_side_reads_feedback() -> None:
    """A hello with ``"feedback": true`` names a sender that reads feedback; without the key (an older peer) or with
    anything but true, no feedback is sent to it."""
    for flag in (True, False):
        hello = Hello(MODEL_ID, None, 1_700_000_000_000, feedback=flag)
        assert parse_message(hello.to_bytes(), None) == hello
    old = msgpack.packb({"sganc": 2, "model_id": bytes.fromhex(MODEL_ID), "stream": None, "epoch_ms": 5},
                        use_bin_type=True)
    assert parse_message(old, None) == Hello(MODEL_ID, None, 5, False)
    odd = msgpack.packb({"sganc": 2, "model_id": bytes.fromhex(MODEL_ID), "stream": None, "epoch_ms": 5,
                         "feedback": 1}, use_bin_type=True)
    assert parse_message(odd, None).feedback is False  # type: ignore[union-attr]


def test_without_feedback_the_sender_is_unconstrained() -> None:
    rate = SendRate(40.0)
    for i in range(100):
        assert rate.may_send(i * 0.04)
        rate.sent(i * 0.04, 2000, 1000)
    assert rate.budget_bps is None and rate.target_kbps() is None


def test_the_budget_skips_frames_and_older_feedback_is_ignored() -> None:
    rate = SendRate(40.0)
    assert rate.on_feedback(Estimate(3, 16_000, 15_000))
    assert not rate.on_feedback(Estimate(2, 99_000, 15_000))  # reordered: older than the last
    assert rate.budget_bps == 16_000
    sent = 0
    for i in range(250):  # 10 s offered at 25 fps, 250-byte messages on the wire (50 kbit/s)
        now = i * 0.04
        if rate.may_send(now):
            rate.sent(now, 250, 100)
            sent += 1
    assert 16_000 * 10 / 2000 * 0.9 <= sent <= 16_000 * 10 / 2000 + 2  # 8 messages/s fit the budget
    assert rate.offered_fps == pytest.approx(25.0)
    assert rate.target_kbps() == pytest.approx(16.0 * 100 / 250)  # packet bits are 40 % of the wire bits
    rate.on_feedback(Estimate(4, 1_000_000, 15_000))
    assert rate.target_kbps() == 40.0  # the ceiling


def test_retarget_changes_the_budget_only() -> None:
    steps: list[StepTables] = []
    rc = RateController(steps, 40.0, 25.0, closed=False)
    rc.buffer = 1234.0
    rc.retarget(10.0, 5.0)
    fresh = RateController(steps, 10.0, 5.0, closed=False)
    assert (rc.frame_budget, rc.limit, rc.repay_frames) == (fresh.frame_budget, fresh.limit, fresh.repay_frames)
    assert rc.buffer == 1234.0


def test_a_zero_estimate_does_not_stop_the_sender() -> None:
    """A faulty peer's ``bwe`` of 0: the budget is the estimator's floor, so a frame still goes now and then."""
    rate = SendRate(None)
    rate.on_feedback(Estimate(0, 0, 0))
    assert rate.budget_bps == MIN_BPS
    sent = 0
    for i in range(100):  # 10 s at 10 fps, 100-byte messages (800 bits): MIN_BPS allows 2.5 per second
        if rate.may_send(i / 10):
            rate.sent(i / 10, 100, 50)
            sent += 1
    assert 20 <= sent <= 30
