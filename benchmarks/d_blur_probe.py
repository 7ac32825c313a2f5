"""Can the face model's discriminator see blur? (diagnostic benchmark, not a test)

The adversarial term of joint training (MODEL_CARD.md, "Adversarial term") sat at chance (D loss 2 ln 2) for
thousands of steps. This probe asks whether D can learn the easiest thing it should teach G: a real training face
from the same face blurred (``--blur`` × average-pool, then bilinear upsampling back). D trains with the trainer's
own D step (``FaceModelTrainer._d_step``: random ``--d-crop`` crops, DiffAugment ``--augment``, lazy R1) on real
faces against their blurred copies; every ``--every`` steps its accuracy is measured on held-out crops (64 faces,
no augmentation; 0.5 = chance). ``--plain`` runs, on the same crops and schedule, a plain 3-layer CNN (PyTorch
default initialisation, Adam 1e-3) as a yardstick for how hard the task is at this crop size.

    python3 benchmarks/d_blur_probe.py --data runs/faces128 [--steps 300] [--d-crop 32] [--blur 4]
        [--augment color,translation,cutout] [--r1-gamma 0.1] [--plain] [--out d_blur_probe]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from common import write_result
from sganc_stream.errors import InputError
from sganc_stream.training.face_data import load_prepared
from sganc_stream.training.face_model import (FaceModelConfig, FaceModelTrainer, TrainSettings, d_logistic,
                                              random_crops, to_tensor)

V1_ARCH = dict(size=128, channel_base=3072, channel_max=256)  # the v1 run's layout (runs/train_v1.sh)


def blurred(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(n, 3, s, s) → the same size with detail above 1/``factor`` of the band removed."""
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="bilinear", align_corners=False)


def plain_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(24, 48, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(48, 96, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 1), nn.Flatten(0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="prepared 128 px faces (prepare-faces output)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--d-crop", type=int, default=32)
    p.add_argument("--blur", type=int, default=4)
    p.add_argument("--augment", default="color,translation,cutout")
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--d-lr", type=float, default=2e-3)
    p.add_argument("--d-arch", default="stylegan2", help="the trainer's D: stylegan2 (residual) or patchgan")
    p.add_argument("--plain", action="store_true", help="the plain-CNN yardstick instead of the discriminator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="d_blur_probe", help="result name under benchmarks/results/")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        if args.blur < 2 or args.steps < 1 or args.every < 1:
            raise InputError("--blur must be >= 2 and --steps, --every >= 1")
        faces = load_prepared(args.data)
        if faces.images.shape[1] != V1_ARCH["size"]:
            raise InputError(f"{args.data}: faces of {faces.images.shape[1]} px, the probe needs {V1_ARCH['size']} px")
        train = faces.select("train")
        rng = np.random.default_rng(args.seed)
        crop_gen = torch.Generator().manual_seed(args.seed)
        settings = TrainSettings(mode="joint", batch=args.batch, adv_weight=0.1, d_crop=args.d_crop, d_lr=args.d_lr, d_arch=args.d_arch,
                                 augment=args.augment, r1_gamma=args.r1_gamma, seed=args.seed)
        trainer = FaceModelTrainer(FaceModelConfig(**V1_ARCH), settings, "cpu")
    except InputError as exc:
        print(f"d_blur_probe: error: {exc}", file=sys.stderr)
        return 2

    def batch(n: int) -> torch.Tensor:
        return to_tensor(np.ascontiguousarray(faces.images[np.sort(rng.choice(train, n, replace=False))]))

    net = plain_cnn() if args.plain else trainer.d
    opt = torch.optim.Adam(net.parameters(), 1e-3) if args.plain else None
    held = batch(64)
    held_real, held_fake = random_crops(held, args.d_crop, crop_gen, like=blurred(held, args.blur))
    curve = []
    start = time.process_time()
    for step in tqdm(range(1, args.steps + 1), desc="D blur probe", unit="step"):
        x = batch(args.batch)
        if opt is None:
            loss = trainer._d_step(x, blurred(x, args.blur))["d"]
            trainer.step_count += 1
        else:
            real, fake = random_crops(x, args.d_crop, crop_gen, like=blurred(x, args.blur))
            d = d_logistic(net(real), net(fake))
            opt.zero_grad()
            d.backward()
            opt.step()
            loss = d.item()
        if step % args.every == 0:
            with torch.no_grad():
                acc = ((net(held_real) > 0).float().mean() + (net(held_fake) < 0).float().mean()).item() / 2
            curve.append({"step": step, "loss": round(loss, 4), "held_out_accuracy": round(acc, 4)})
            tqdm.write(f"step {step}: loss {loss:.3f}, held-out accuracy {acc:.2f}")
    result = {"command": " ".join(sys.argv), "settings": vars(args), "model": "plain CNN" if args.plain else
              f"{args.d_arch} D on {args.d_crop} px crops (v1 layout)", "cpu_s_per_step": (time.process_time() - start) / args.steps,
              "curve": curve}
    print(write_result(args.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
