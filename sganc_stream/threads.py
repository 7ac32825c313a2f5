"""Torch thread control: one default for the networks on CPU, and one thread for small per-frame work.

torch is imported when a function here runs, not with the module: the CLI reads ``DEFAULT_THREADS`` at start-up, and
a decode on ONNX Runtime never imports torch."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sganc_stream.errors import InputError

# Intra-op threads for G and E on CPU in the commands (transcode, decode, demo, the call): the face models are
# small (64–256 px, 33 ms a frame for E), and on a machine that also runs other work every parallel region waits
# for a descheduled thread. `decode` of long_1500_frames.mp4's stream on the 2-core machine: 3.7 frames/s with
# torch's unset default, 48.5 with this one (22.3 vs 13.2 for 2 threads when busy; README, "--threads").
# `--threads N` overrides it.
DEFAULT_THREADS = 1


def set_threads(threads: int) -> None:
    """Use ``threads`` torch intra-op threads from now on; InputError (one line) below 1."""
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    Small operations (the flow's coupling layers, MS-SSIM's depthwise convolutions) gain nothing from intra-op
    threads, and on a loaded 2-core machine every parallel region waits for a descheduled thread: measured here,
    the 18x512 flow took 519 ms with 2 threads vs 24 ms with 1, MS-SSIM on 256 px 2.2 s vs 0.04 s.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
