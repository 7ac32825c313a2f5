"""Torch thread control for small per-frame work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    Small operations (the flow's coupling layers, MS-SSIM's depthwise convolutions) gain nothing from intra-op
    threads, and on a loaded 2-core machine every parallel region waits for a descheduled thread: measured here,
    the 18x512 flow took 519 ms with 2 threads vs 24 ms with 1, MS-SSIM on 256 px 2.2 s vs 0.04 s.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
