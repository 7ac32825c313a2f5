"""Uniform average of several training checkpoints' raw E and G weights (SWA-style, Izmailov et al. 2018), written
as a training checkpoint that ``face_model_quality.py --raw`` and ``complete-bundle --raw`` read.

    python3 benchmarks/average_checkpoints.py runs/ckpt_B_20958.pt runs/ckpt_B_22800.pt runs/ckpt_B_25300.pt \
        --out runs/ckpt_B_avg.pt

The checkpoints must come from one run (same architecture, so every tensor has the same shape). The output is the
last checkpoint with its ``g`` and ``e`` floating-point tensors (float32 arithmetic, cast back) replaced by the
mean; its optimiser, discriminator and EMA state are the last one's, so it is for evaluation and bundles, not for
resuming a run. A checkpoint whose modules differ raises one error line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sganc_stream.errors import InputError
from sganc_stream.fileio import atomic_output

AVERAGED = ("g", "e")


def average(checkpoints: list[dict]) -> dict:
    """The last of ``checkpoints`` (torch training-checkpoint dicts) with its ``modules.g`` / ``modules.e`` float
    tensors replaced by the element-wise mean over all; ValueError where names or shapes differ."""
    out = checkpoints[-1]
    for name in AVERAGED:
        state = out["modules"][name]
        for other in checkpoints[:-1]:
            theirs = other["modules"][name]
            if theirs.keys() != state.keys() or any(theirs[k].shape != state[k].shape for k in state):
                raise ValueError(f"module {name!r} differs between the checkpoints: not one run")
        for key, tensor in state.items():
            if tensor.is_floating_point():
                mean = sum(c["modules"][name][key].float() for c in checkpoints) / len(checkpoints)
                state[key] = mean.to(tensor.dtype)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="training checkpoint.pt files of one run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        state = average([torch.load(p, weights_only=True, map_location="cpu") for p in args.checkpoints])
        with atomic_output(args.out) as tmp:
            torch.save(state, tmp)
    except (OSError, ValueError, KeyError, InputError) as exc:
        print(f"average_checkpoints: error: {exc}", file=sys.stderr)
        return 2
    print(f"mean of {len(args.checkpoints)} checkpoints' E and G -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
