"""CPU cost of the adversarial terms of joint face-model training at 128 px (benchmark, not a test).

Times, in process CPU seconds on one thread, the pieces a discriminator adds to a training step of the v1 layout
(``--channel-base 3072 --channel-max 256``, batch 16): DiffAugment, D's logistic step on reals and fakes (forward
and backward), the R1 penalty (run every ``r1_every``-th step) and pix2pixHD feature matching. Random images: the
cost does not depend on content.

    python3 benchmarks/adv_term_cost.py
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch

from sganc_stream.training.augment import diff_augment, parse_policy
from sganc_stream.training.discriminator import Discriminator
from sganc_stream.training.face_model import FaceModelConfig, d_logistic, feature_matching, r1_penalty


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = Discriminator(FaceModelConfig(size=128, channel_base=3072, channel_max=256).generator_config())
    policy = parse_policy("color,translation,cutout")
    real, fake = torch.rand(16, 3, 128, 128) * 2 - 1, torch.rand(16, 3, 128, 128) * 2 - 1
    rec = fake.clone().requires_grad_(True)
    results = {
        "diff_augment_real_and_fake": cpu_seconds(lambda: (diff_augment(real, policy), diff_augment(fake, policy)), 3),
        "d_step_real_and_fake": cpu_seconds(
            lambda: d_logistic(d(diff_augment(real, policy)), d(diff_augment(fake, policy))).backward(), 3),
        "r1_penalty": cpu_seconds(lambda: r1_penalty(d, real, policy).backward(), 1),
        "feature_matching": cpu_seconds(lambda: feature_matching(d, rec, real).backward(), 3),
    }
    print(json.dumps({"unit": "CPU seconds per call, 1 thread, batch 16, 128 px", **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
