"""The face model's training log as a CSV of 50-step means (what MODEL_CARD.md's progress table and plots read).

    python3 benchmarks/face_model_training_log.py [--log runs/face128_id/log.jsonl] [--every 50]

Reads ``train-face-model``'s ``log.jsonl`` (one line per step) and writes
``benchmarks/results/face_model_v1_training_log.csv``: per window of ``--every`` steps, the last step, images seen
and CPU-hours, and the mean of every loss term logged in it (empty where a term was off, e.g. before the
adversarial or colour term was switched on).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from common import RESULTS
from sganc_stream.fileio import write_bytes_atomic

FIXED = ("step", "images", "cpu_hours")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=Path("runs/face128_id/log.jsonl"))
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS / "face_model_v1_training_log.csv")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    terms = list(dict.fromkeys(k for r in rows for k in r if k not in FIXED))
    out = []
    for end in range(args.every, rows[-1]["step"] + 1, args.every):
        window = [r for r in rows if end - args.every < r["step"] <= end]
        if not window:
            continue
        rec: dict[str, object] = {"step": end, "images": window[-1]["images"], "cpu_hours": round(window[-1]["cpu_hours"], 4)}
        for k in terms:
            vals = [r[k] for r in window if r.get(k) is not None]
            rec[k] = round(sum(vals) / len(vals), 5) if vals else ""
        out.append(rec)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*FIXED, *terms])
    writer.writeheader()
    writer.writerows(out)
    write_bytes_atomic(args.out, text.getvalue().encode())
    print(f"{len(out)} rows to step {out[-1]['step']} ({out[-1]['cpu_hours']} CPU-hours) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
