"""Run one input through a fuzz target, outside libFuzzer, and show what it raises.

    python3 -m fuzz.replay TARGET FILE...
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] not in TARGETS:
        print(f"usage: python3 -m fuzz.replay TARGET FILE...  (targets: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    status = 0
    for name in args[1:]:
        try:
            TARGETS[args[0]].run(Path(name).read_bytes())
            print(f"{name}: handled (no exception beyond the documented SgancError family)")
        except Exception:  # noqa: BLE001 - the point is to show it
            traceback.print_exc()
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
