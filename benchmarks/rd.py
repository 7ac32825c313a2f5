"""Pure rate–distortion helpers for the bitrate-versus-g benchmark: wire overhead, curve envelopes, headline ratios.

Kept free of models and I/O so they can be unit-tested (tests/test_benchmark_bitrate_vs_g.py).

Wire estimate of sganc packets (one packet = one WebRTC data-channel message): the library's one formula,
``sganc_stream.rtc.wire.wire_bytes`` (SCTP DATA chunks of at most 1160 B, 77 B per datagram; see its module doc), which
the live call's stats use as well.

Pixel codecs' wire estimate (RTP, as a browser would send them): each frame split into RTP packets of at most
``RTP_PAYLOAD`` bytes, each costing RTP header 12 + SRTP auth tag 10 + UDP 8 + IPv4 20 = 50 B (payload-format
headers such as the H.264 FU-A byte are not counted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sganc_stream.rtc.wire import wire_bytes  # noqa: F401 - re-exported: the benchmark scripts import it from here

RTP_OVERHEAD = 12 + 10 + 8 + 20
RTP_PAYLOAD = 1150


def rtp_wire_bytes(frame: int) -> int:
    """On-the-wire IPv4 bytes of one ``frame``-byte coded video frame sent over SRTP (see module doc)."""
    return frame + max(1, math.ceil(frame / RTP_PAYLOAD)) * RTP_OVERHEAD


def kbps(total_bytes: float, frames: int, fps: float) -> float:
    return 8.0 * total_bytes / frames * fps / 1000.0


def envelope(points: Sequence[tuple[float, float]], lower_is_better: bool = True) -> list[tuple[float, float]]:
    """The operational rate–quality curve: points sorted by rate, keeping only those that beat every cheaper one.

    ``points`` are (rate, quality) pairs; the result is strictly increasing in rate and strictly improving in
    quality, so the quality reachable at a rate is monotone and can be interpolated. NaN qualities are dropped.
    """
    sign = 1.0 if lower_is_better else -1.0
    out: list[tuple[float, float]] = []
    for rate, q in sorted((r, q) for r, q in points if np.isfinite(q) and np.isfinite(r) and r > 0):
        if not out or sign * q < sign * out[-1][1]:
            if out and rate == out[-1][0]:
                out[-1] = (rate, q)
            else:
                out.append((rate, q))
    return out


def rate_at_quality(points: Sequence[tuple[float, float]], quality: float,
                    lower_is_better: bool = True) -> tuple[float | None, str]:
    """Rate at which a curve reaches ``quality``, by interpolating log-rate linearly in quality on its envelope.

    Returns (rate, 'ok'), or (None, why) when the quality lies outside the curve's range: 'better than the
    curve reaches' (the codec never gets that good) or 'worse than its lowest rate' (even its cheapest point is
    better, so its rate there is at most its lowest rate). Never extrapolates.
    """
    env = envelope(points, lower_is_better)
    if not env or not np.isfinite(quality):
        return None, "no points"
    sign = 1.0 if lower_is_better else -1.0
    q = sign * quality
    best, worst = sign * env[-1][1], sign * env[0][1]
    if q < best:
        return None, f"better than the curve reaches (best {env[-1][1]:.4g})"
    if q > worst:
        return None, f"worse than its lowest rate (rate {env[0][0]:.4g} gives {env[0][1]:.4g})"
    for (r0, q0), (r1, q1) in zip(env, env[1:]):
        a, b = sign * q0, sign * q1
        if b <= q <= a:
            t = 0.0 if a == b else (a - q) / (a - b)
            return float(math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))), "ok"
    return float(env[0][0]), "ok"  # a single-point envelope whose quality equals ``quality``


def headline_ratio(ours: tuple[float, float], other: Sequence[tuple[float, float]],
                   lower_is_better: bool = True) -> dict[str, float | str | None]:
    """How many times more rate ``other`` needs than our (rate, quality) point for the same quality.

    Outside the other curve's range there is no ratio, only a bound: ``ratio_bound`` is '<= x' when even the
    other's cheapest point beats our quality (x = its lowest rate / ours), '>= x' when it never reaches our
    quality (x = its highest rate / ours).
    """
    rate, status = rate_at_quality(other, ours[1], lower_is_better)
    env = envelope(other, lower_is_better)
    bound = None
    if rate is None and env and status.startswith("worse"):
        bound = f"<= {env[0][0] / ours[0]:.3g}"
    elif rate is None and env and status.startswith("better"):
        bound = f">= {max(r for r, _ in other) / ours[0]:.3g}"
    return {"our_kbps": ours[0], "quality": ours[1], "other_kbps": rate,
            "ratio": None if rate is None else rate / ours[0], "ratio_bound": bound, "status": status}


def quantize_fixed(latents: np.ndarray, step: float) -> np.ndarray:
    """W+ rounded to a multiple of ``step`` as integers (the naive coding of the earlier GAN-compression papers)."""
    return np.rint(np.asarray(latents, dtype=np.float64) / step).astype(np.int64)


def smallest_int_dtype(q: np.ndarray) -> np.dtype:
    """int8, int16 or int32: the narrowest little-endian type that holds every value (how a file would store it)."""
    hi = int(np.abs(q).max(initial=0))
    for dt in ("<i1", "<i2", "<i4"):
        if hi <= np.iinfo(np.dtype(dt)).max - 1:
            return np.dtype(dt)
    raise ValueError("values too large for int32")


def empirical_bits(symbols: np.ndarray, train: np.ndarray, support: tuple[int, int]) -> float:
    """Ideal bits of ``symbols`` under the histogram of ``train`` on ``support`` (add-one smoothed) plus an escape.

    Values outside the support cost the escape's information plus 32 raw bits, as the coder's escapes do.
    """
    lo, hi = support
    escape = hi - lo + 1

    def index(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.int64)
        return np.where((v < lo) | (v > hi), escape, v - lo)

    counts = np.bincount(index(train), minlength=escape + 1).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    idx = index(symbols)
    return float(-np.log2(p[idx]).sum() + 32 * (idx == escape).sum())


def entropy_bits(symbols: np.ndarray) -> float:
    """Ideal bits of ``symbols`` under their own histogram (an oracle lower bound for any static table)."""
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(max(0.0, -(counts * np.log2(p)).sum()))
