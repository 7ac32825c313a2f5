"""CPU cost of one face-model training step, by runtime option (issue #12 point 2; diagnostic benchmark, not a test).

Builds the v1 trainer (128 px, ``runs/train_v1.sh``'s layout and loss recipe: identity and face-perceptual terms,
colour, temporal pairs, delta, geometric and photometric augmentation) on a batch of real prepared faces and times
``FaceModelTrainer.step`` under each variant, interleaved round by round so that a load change on a shared machine
hits all variants alike:

- ``eager``: PyTorch eager, float32, NCHW (what training ran until step 21,400);
- ``channels_last``: G's and E's convolution weights and the batch in channels-last memory format (what the trainer
  does on CPU since);
- ``bf16``: CPU autocast to bfloat16 around the step (this CPU has AVX512-BF16, no AMX);
- ``bf16_nets``: the trainer's ``--bf16``: only E, G and dlib's network under that autocast, every loss in float32
  (channels-last, as the trainer);
- ``compile``: ``torch.compile`` of G and E (inductor; its compile time is excluded, reported apart).

Reported per variant: median process CPU seconds per step over the timed rounds (one thread, so CPU time is what a
core spends, whatever else shares the machine) and images per CPU-second; the ratio to ``eager``.

With ``--checkpoint`` (a ``train-face-model`` checkpoint of that layout) every variant starts from its weights and
optimizer state instead of a fresh model and trains ``--rounds`` steps on the *same* batches of training faces (a new
batch each round): a paired check that a faster variant also trains as well, reported as each variant's mean losses
over the rounds and their difference from the first variant's. Those are each variant's own training losses (bf16's
computed in bfloat16), so after the rounds every variant's raw E and G are also judged alike, in float32 without
autocast, on one fixed batch of 32 validation faces (``held_out``: MSE, MS-SSIM, dlib identity distance).

    python3 benchmarks/train_step_speed.py --data runs/faces128 [--rounds 5] [--variants eager,channels_last,bf16,compile]
        [--checkpoint runs/face128/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from common import write_result
from sganc_stream.errors import InputError
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import (FaceModelConfig, FaceModelTrainer, TrainSettings, load_trainer,
                                              reconstruction_loss, set_memory_format, to_tensor)

V1_ARCH = dict(size=128, channel_base=3072, channel_max=256)  # runs/train_v1.sh's layout
V1_SETTINGS = dict(mode="joint", batch=16, identity_weight=0.35, face_perceptual_weight=0.5, colour_weight=4.0,
                   temporal_weight=0.01, delta_weight=1e-4, pair_fraction=0.25, geometric=0.5, photometric=0.5)
VARIANTS = ("eager", "channels_last", "bf16", "bf16_nets", "compile")


def build(variant: str, checkpoint: str | None
          ) -> tuple[FaceModelTrainer, Callable[[], contextlib.AbstractContextManager[None]]]:
    """A trainer for ``variant`` (fresh, or the checkpoint's state with the v1 loss recipe) and the context each
    step runs in."""
    settings = {**V1_SETTINGS, "bf16": variant == "bf16_nets"}
    if checkpoint is None:
        trainer = FaceModelTrainer(FaceModelConfig(**V1_ARCH), TrainSettings(**settings), "cpu")
    else:
        trainer = load_trainer(checkpoint, **settings)
    # The trainer lays out CPU weights and batches channels-last itself (since this benchmark measured it); the
    # other variants get NCHW back.
    trainer.channels_last = variant in ("channels_last", "bf16_nets")
    for module in (trainer.g, trainer.e, trainer.g_ema, trainer.e_ema):
        set_memory_format(module, torch.channels_last if trainer.channels_last else torch.contiguous_format)
    if variant == "compile":
        trainer.g = torch.compile(trainer.g)  # type: ignore[assignment]
        trainer.e = torch.compile(trainer.e)  # type: ignore[assignment]

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            yield

    return trainer, context


@torch.no_grad()
def held_out(trainer: FaceModelTrainer, faces: torch.Tensor) -> dict[str, float]:
    """MSE, MS-SSIM and dlib identity distance of the raw G(E(x)) on ``faces``, float32, no autocast."""
    from sganc_stream.training.identity import IdentityLoss

    g, e = trainer.exported(ema=False)
    rec = g(e(faces)).clamp(-1, 1)
    _, mse, sim = reconstruction_loss(rec, faces, 1.0, 1.0)
    identity = IdentityLoss().compare(rec, faces).distance
    return {"mse": round(float(mse), 5), "msssim": round(float(sim), 5), "identity": round(float(identity.mean()), 5)}


def mean_losses(steps: list[dict[str, float]]) -> dict[str, float]:
    """Each logged loss's mean over the steps (warm-up included: with a checkpoint all steps are paired)."""
    return {k: round(float(np.mean([s[k] for s in steps])), 5) for k in steps[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="prepared 128 px faces (prepare-faces output)")
    p.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compile happens here)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--checkpoint", help="start every variant from this checkpoint and train on the same batches")
    p.add_argument("--out", default="train_step_speed", help="result name under benchmarks/results/")
    args = p.parse_args(argv)
    try:
        variants = [v for v in args.variants.split(",") if v]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown or not variants:
            raise InputError(f"--variants: choose from {', '.join(VARIANTS)} (got {args.variants!r})")
        if args.rounds < 1 or args.warmup < 1:
            raise InputError("--rounds and --warmup must be >= 1")
        faces = load_prepared(args.data)
        if faces.images.shape[1] != V1_ARCH["size"]:
            raise InputError(f"{args.data}: faces of {faces.images.shape[1]} px, the v1 trainer needs {V1_ARCH['size']} px")
    except InputError as exc:
        print(f"train_step_speed: error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train = faces.select("train")
    batches = [to_tensor(np.ascontiguousarray(faces.images[np.sort(rng.choice(train, 16, replace=False))]))
               for _ in range(args.warmup + args.rounds)]
    val = faces.select("val")
    check = to_tensor(np.ascontiguousarray(faces.images[np.sort(rng.choice(val, min(32, len(val)), replace=False))]))
    runs = {v: build(v, args.checkpoint) for v in variants}
    warm_s: dict[str, float] = {}
    times: dict[str, list[float]] = {v: [] for v in variants}
    losses: dict[str, list[dict[str, float]]] = {v: [] for v in variants}

    def one_step(v: str, i: int) -> float:
        trainer, context = runs[v]
        start = time.process_time()
        with context():
            losses[v].append(trainer.step(batches[i], pairs=2))
        return time.process_time() - start

    for v in variants:
        warm_s[v] = sum(one_step(v, i) for i in range(args.warmup))
        print(f"{v}: warm-up {warm_s[v]:.1f} CPU-s", flush=True)
    for r in range(args.rounds):  # interleaved: round r runs every variant once
        for v in variants:
            times[v].append(one_step(v, args.warmup + r))
        print(f"round {r + 1}: " + ", ".join(f"{v} {times[v][-1]:.2f}" for v in variants), flush=True)
    base = statistics.median(times[variants[0]])
    table = {v: {"cpu_s_per_step_median": round(statistics.median(t), 3), "images_per_cpu_s":
                 round(16 / statistics.median(t), 2), f"ratio_to_{variants[0]}": round(statistics.median(t) / base, 3),
                 "warmup_cpu_s": round(warm_s[v], 1), "cpu_s_per_step": [round(x, 3) for x in t],
                 "mean_losses": mean_losses(losses[v])} for v, t in times.items()}
    for v, row in table.items():
        row["loss_minus_first"] = {k: round(row["mean_losses"][k] - table[variants[0]]["mean_losses"][k], 5)
                                   for k in row["mean_losses"]}
        row["held_out"] = held_out(runs[v][0], check)
    for v, row in table.items():
        print(f"{v:14s} {row['cpu_s_per_step_median']:.3f} CPU-s/step  {row['images_per_cpu_s']:.2f} img/CPU-s  "
              f"×{row[f'ratio_to_{variants[0]}']:.2f}  losses {row['mean_losses']}  held out {row['held_out']}")
    print(write_result(args.out, {"command": " ".join(sys.argv), "settings": vars(args), "arch": V1_ARCH,
                                  "recipe": V1_SETTINGS, "threads": 1,
                                  "paired_from_checkpoint": args.checkpoint, "variants": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
