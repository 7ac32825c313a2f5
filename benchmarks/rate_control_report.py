"""Plot of the rate-control benchmark from its result dict (``benchmarks/results/rate_control.json``).

    python benchmarks/rate_control_report.py [RESULT.json]   # → benchmarks/results/rate_control.png

One panel per residual table: the packet rate of every 10-second window (one starting at every whole second) of every
held-out clip at each target, the target as a dashed line and the ±10 % band shaded (issue #16's acceptance).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common import RESULTS


def plot(result: dict[str, Any], path: Path) -> Path:
    """Write the window-rate plot of ``result`` (rate_control.py's dict) to ``path`` (PNG); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tol = result["tolerance"]
    residuals = list(dict.fromkeys(r["residual"] for r in result["runs"] if r["target_kbps"] is not None))
    targets = sorted({r["target_kbps"] for r in result["runs"] if r["target_kbps"] is not None})
    clips = list(dict.fromkeys(r["clip"] for r in result["runs"]))
    fig, axes = plt.subplots(1, len(residuals), figsize=(6.5 * len(residuals), 4.2), sharey=True, squeeze=False)
    for ax, residual in zip(axes[0], residuals):
        for t in targets:
            ax.axhspan(t * (1 - tol), t * (1 + tol), color="0.9", zorder=0)
            ax.axhline(t, color="0.4", ls="--", lw=0.8, zorder=1)
        for ci, clip in enumerate(clips):
            for t in targets:
                row = next((r for r in result["runs"] if r["clip"] == clip and r["residual"] == residual
                            and r["target_kbps"] == t), None)
                if row is not None:
                    ax.plot(range(len(row["window_kbps"])), row["window_kbps"], color=f"C{ci}", lw=1.2,
                            label=Path(clip).stem if t == targets[0] else None)
        ax.set_title(f"residual table: {residual}")
        ax.set_xlabel(f"window start (s); each window {result['window_s']:g} s")
        ax.set_yscale("log")
        ax.set_yticks(targets, [f"{t:g}" for t in targets])
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("packet rate (kbit/s)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"--target-kbps {', '.join(f'{t:g}' for t in targets)}: every 10-s window (band: ±{tol:.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "rate_control.json"
    print(plot(json.loads(src.read_text()), src.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
