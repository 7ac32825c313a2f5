"""Peak resident memory of this process, and a reset, for the memory checks of the tests, fuzz harness and benchmarks.

Why not ``resource.getrusage(...).ru_maxrss``: on Linux it is ``max(peak of this address space, peak of the
address space this process exec'd from)``, and a child forked from a large process (a test run that has loaded
models) exec's from a copy of it: its ``ru_maxrss``, and the one ``os.wait4`` returns, start at the parent's peak.
In-process, a peak reached earlier hides every later, smaller one. ``VmHWM`` in ``/proc/self/status`` (proc(5)) is
the high-water mark of this address space alone, and writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0)
resets it to the current resident size, so a check can measure one operation. Elsewhere both fall back to
``ru_maxrss`` (kilobytes on Linux, bytes on macOS).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """Peak resident set size of this process's address space, in MiB (float); since the last :func:`reset_peak_rss`."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Set the peak to the current resident size (``clear_refs`` 5). Returns False where the OS cannot, and then
    :func:`peak_rss_mb` keeps counting from process start: a check that needs the reset should skip."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
