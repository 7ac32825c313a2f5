"""The live call's figures: counters, one-second windows, and the JSON-lines log (``--log``).

One line per event: ``tx`` (a sent frame, with per-stage encode times), ``rx`` (a frame message used; ``restored``:
frames restored from its redundancy), ``display`` (a shown frame, with capture-to-display latency and decode/render
times), ``gap`` (a loss that needs a keyframe), ``sync`` (the keyframe that ended it, with the recovery time),
``tx_no_face`` / ``rx_no_face`` / ``display_no_face`` (no-face packets: the sender's camera shows no face, the
receiver shows the no-face picture; counted apart, so ``tx``/``rx``/``display`` and the latency figures are face
frames only), connection events (``joined`` with the process age, ``open``, ``hello``, ``left``), and every second
``stats``: rates in kbps over the last second (payload = message bytes, channel = with SCTP DATA chunk framing, wire
= estimated IP packets; see ``rtc.wire``), frame rates, median latency, and the event loop's worst scheduling lag
(what a blocked loop would show first).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, TextIO

from sganc_stream.rtc.wire import sctp_bytes, wire_bytes


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``); None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (nearest rank, 0 < q < 1) of ``values``, rounded to 0.1; None for no values."""
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 1)


class StatsLog:
    """Counters, one-second windows and the JSON-lines log; used from the event loop only."""

    def __init__(self, path: Path | None, name: str, err: TextIO, quiet: bool) -> None:
        self.name, self.err, self.quiet = name, err, quiet
        self.file = path.open("w", buffering=1) if path is not None else None
        self.total: dict[str, float] = {}
        self.window: dict[str, float] = {}
        self.latencies: list[float] = []  # the whole call
        self.window_latencies: list[float] = []
        self.window_start = time.time()
        self.loop_lag_ms = 0.0  # worst in the current window
        self.last: dict[str, Any] = {}  # the last window's record (for the overlay)

    def add(self, **counts: float) -> None:
        for k, v in counts.items():
            self.total[k] = self.total.get(k, 0) + v
            self.window[k] = self.window.get(k, 0) + v

    def message(self, direction: str, n: int) -> None:
        """Count one ``n``-byte message sent (``tx``) or received (``rx``) at its three levels."""
        self.add(**{f"{direction}_payload": n, f"{direction}_channel": sctp_bytes(n), f"{direction}_wire": wire_bytes(n)})

    def event(self, ev: str, **fields: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"t": round(time.time(), 4), "peer": self.name, "ev": ev, **fields}) + "\n")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.name}: {text}", file=self.err, flush=True)

    def latency(self, ms: float) -> None:
        self.latencies.append(ms)
        self.window_latencies.append(ms)

    def lag(self, ms: float) -> None:
        self.loop_lag_ms = max(self.loop_lag_ms, ms)

    def tick(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Close the current window: log and return its record."""
        now = time.time()
        span = max(now - self.window_start, 1e-6)
        w = self.window
        kbps = {f"{d}_{k}_kbps": round(w.get(f"{d}_{k}", 0) * 8 / span / 1000, 3)
                for d in ("tx", "rx") for k in ("payload", "channel", "wire")}
        lat = self.window_latencies
        rec = {**kbps, "tx_fps": round(w.get("tx_frames", 0) / span, 2), "rx_fps": round(w.get("rx_frames", 0) / span, 2),
               "display_fps": round(w.get("displayed", 0) / span, 2),
               "latency_ms": round(statistics.median(lat), 1) if lat else None,
               "loop_lag_max_ms": round(self.loop_lag_ms, 1), **extra,
               "totals": {k: int(v) for k, v in self.total.items()}}
        self.event("stats", **rec)
        self.window, self.window_latencies, self.window_start, self.loop_lag_ms = {}, [], now, 0.0
        self.last = rec
        return rec

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
