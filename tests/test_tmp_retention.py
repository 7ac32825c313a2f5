"""The suite cleans up after itself: a passing test's ``tmp_path`` is removed as soon as it ends.

CI once failed with "No space left on device": the official-checkpoint tests write about 1.4 GB each under
``tmp_path``, and pytest's default keeps every test's folder of the last three sessions. pyproject.toml sets
``tmp_path_retention_policy = "failed"``; this runs pytest under that configuration on a tiny test file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
from pathlib import Path

def test_passes(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 1024)
    Path(__file__).with_name("seen.txt").write_text(str(tmp_path))
'''


def test_passing_tests_leave_no_tmp_path(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "test_probe.py").write_text(PROBE)
    base = tmp_path / "base"
    base.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
           "--rootdir", str(probe), str(probe / "test_probe.py")]
    # --basetemp would switch the clean-up of the session folder off; a per-run TMPDIR keeps the probe's own.
    run = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(base)},
                         cwd=probe, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    used = Path((probe / "seen.txt").read_text())
    assert str(used).startswith(str(base))
    assert not used.exists()
