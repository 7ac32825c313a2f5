"""CPU cost of the adversarial terms of joint face-model training at 128 px (benchmark, not a test).

Times, in process CPU seconds on one thread, the pieces a discriminator adds to a training step of the v1 layout
(``--channel-base 3072 --channel-max 256``, batch 16): DiffAugment, D's logistic step on reals and fakes (forward
and backward), G's adversarial term (D's forward and backward into the reconstructions), the R1 penalty (run every
``r1_every``-th step) and pix2pixHD feature matching, for the whole-image discriminator and for patch
discriminators on random full-resolution crops (``--d-crop``). Random images: the cost does not depend on content.
A training step without D costs about 1.6-2.0 CPU-s (MODEL_CARD.md).

    python3 benchmarks/adv_term_cost.py [--crops 0 64 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from common import write_result
from sganc_stream.training.augment import diff_augment, parse_policy
from sganc_stream.training.discriminator import Discriminator
from sganc_stream.training.face_model import (FaceModelConfig, d_logistic, feature_matching, g_nonsaturating,
                                              r1_penalty, random_crops)


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def costs(crop: int, repeats: int) -> dict[str, float]:
    """CPU seconds per call of each piece, for a D judging whole 128 px images (``crop`` 0) or ``crop`` px crops."""
    config = FaceModelConfig(size=128, channel_base=3072, channel_max=256).generator_config()
    d = Discriminator(config, input_size=crop or None)
    policy = parse_policy("color,translation,cutout")
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 3, 128, 128) * 2 - 1, torch.rand(16, 3, 128, 128) * 2 - 1
    rec = fake.clone().requires_grad_(True)
    seen = lambda x: random_crops(x, crop, gen)  # noqa: E731 - what D sees: the image, or a crop of it
    out = {
        "diff_augment_real_and_fake": cpu_seconds(lambda: (diff_augment(seen(real), policy),
                                                           diff_augment(seen(fake), policy)), repeats),
        "d_step_real_and_fake": cpu_seconds(
            lambda: d_logistic(d(diff_augment(seen(real), policy)), d(diff_augment(seen(fake), policy))).backward(),
            repeats),
        "g_adversarial": cpu_seconds(lambda: g_nonsaturating(d(diff_augment(seen(rec), policy))).backward(), repeats),
        "r1_penalty": cpu_seconds(lambda: r1_penalty(d, seen(real), policy).backward(), 1),
        "feature_matching": cpu_seconds(lambda: feature_matching(d, *random_crops(rec, crop, gen, like=real)).backward(),
                                        repeats),
    }
    out["per_step_without_fm"] = (out["d_step_real_and_fake"] + out["g_adversarial"]
                                  + out["r1_penalty"] / 16)  # R1 every 16th step
    return {k: round(v, 3) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, nargs="+", default=[0, 64, 32], help="D input crops (0 = whole image)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = {("whole" if c == 0 else f"crop{c}"): costs(c, args.repeats) for c in args.crops}
    path = write_result("adv_term_cost", {"unit": "CPU seconds per call, 1 thread, batch 16, 128 px", "results": results})
    for name, r in results.items():
        print(f"{name:>6}: {r['per_step_without_fm']:.2f} CPU-s per step (D step {r['d_step_real_and_fake']:.2f}, "
              f"G adversarial {r['g_adversarial']:.2f}, R1 {r['r1_penalty']:.2f} every 16th)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
