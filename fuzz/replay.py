"""Run one input through a fuzz target, outside libFuzzer, and show what it raises and the CPU time it takes.

    python3 -m fuzz.replay TARGET FILE...

Each file is run twice: the first run pays for lazy imports and caches, the second is timed in CPU seconds of this
process (``time.process_time``), which a busy machine does not inflate the way it inflates wall time: the campaign
uses it to confirm a libFuzzer timeout (wall clock) before it counts a hang.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from fuzz.targets import TARGETS


def cpu_seconds(target: str, data: bytes) -> float:
    """CPU seconds of one run of ``data`` through ``target`` (exceptions ignored); run it once before, to warm up."""
    started = time.process_time()
    try:
        TARGETS[target].run(data)
    except Exception:  # noqa: BLE001 - only the time matters here
        pass
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] not in TARGETS:
        print(f"usage: python3 -m fuzz.replay TARGET FILE...  (targets: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    status = 0
    for name in args[1:]:
        data = Path(name).read_bytes()
        try:  # also the warm-up run of cpu_seconds below
            TARGETS[args[0]].run(data)
            print(f"{name}: handled (no exception beyond the documented SgancError family)")
        except Exception:  # noqa: BLE001 - the point is to show it
            traceback.print_exc()
            status = 1
        print(f"{name}: {cpu_seconds(args[0], data):.4f} CPU s")
    return status


if __name__ == "__main__":
    sys.exit(main())
