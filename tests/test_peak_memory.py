"""Peak memory is this process's own, resettable, and a child's is not its parent's (CI failed on that once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parent.parent
CHILD = "from sganc_stream.peak_memory import peak_rss_mb; print(peak_rss_mb())"


def _touch(mb: int) -> np.ndarray:
    return np.ones(mb * 1024 * 1024 // 8)  # written, so resident


RESET_PROBE = """
import json, numpy as np
from sganc_stream.peak_memory import peak_rss_mb, reset_peak_rss
ok = reset_peak_rss()
base = peak_rss_mb()
big = np.ones(400 * 1024 * 1024 // 8)
high = peak_rss_mb()
del big
reset_peak_rss()
after = peak_rss_mb()
small = np.ones(100 * 1024 * 1024 // 8)
print(json.dumps({"ok": ok, "base": base, "high": high, "after": after, "small": peak_rss_mb()}))
"""


def test_reset_makes_a_smaller_peak_visible() -> None:
    # in a fresh process: a long test run's heap need not give freed memory back to the OS
    out = subprocess.run([sys.executable, "-c", RESET_PROBE], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    r = json.loads(out.stdout)
    if not r["ok"]:
        pytest.skip("this OS cannot reset a process's peak memory (/proc/self/clear_refs)")
    assert r["high"] - r["base"] > 350
    assert r["after"] < r["high"] - 300  # the 400 MB peak is forgotten
    assert 90 < r["small"] - r["after"] < 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and wait4's inherited peak are Linux's")
def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    held = _touch(1024)  # the parent is large when it starts the child, as a test run is after loading models
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    own = float(proc.stdout.read())
    proc.stdout.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_maxrss / 1024 > 1000  # what CI measured: the parent's peak, carried over fork + exec
    assert own < 200  # a bare interpreter and one small module
    del held
