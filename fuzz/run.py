"""Run one fuzz target under libFuzzer (through atheris), coverage-guided over the project's own code.

    python3 -m fuzz.run TARGET [--runs N] [--seconds S] [--corpus DIR] [--artifacts DIR]

libFuzzer options used: ``-runs`` (inputs, seeds included), ``-max_total_time``, ``-timeout=1`` (an input running
over :data:`fuzz.targets.HANG_SECONDS` is a hang), ``-rss_limit_mb``, ``-max_len`` (the target's), and
``-print_final_stats=1`` (the benchmark reads ``stat::number_of_executed_units`` and ``stat::peak_rss_mb``).
A finding stops the process with libFuzzer's report and the input written under ``--artifacts`` (crash-*,
timeout-*, oom-*). An input that raises the process's peak RSS by more than ``--input-memory-mb`` also counts as
a crash (:class:`MemoryBlowup`; the peak is reset before each input): a few kB of input must not allocate
hundreds of MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import traceback
from pathlib import Path

from sganc_stream.peak_memory import peak_rss_mb, reset_peak_rss

# The project's modules that parse outside input, imported under atheris' instrumentation for coverage.
INSTRUMENTED = [
    "sganc_stream.bitstream.packet", "sganc_stream.bitstream.container", "sganc_stream.entropy.rans",
    "sganc_stream.entropy.tables", "sganc_stream.latent.codec", "sganc_stream.latent.model",
    "sganc_stream.latent.sequence", "sganc_stream.rtc.transport", "sganc_stream.rtc.congestion",
    "sganc_stream.rtc.signaling", "sganc_stream.bundle",
    "sganc_stream.models.checkpoint", "sganc_stream.models.stylegan2", "sganc_stream.models.fast_encoder",
    "sganc_stream.video", "sganc_stream.cli.latents", "sganc_stream.pipeline",
]
DICTIONARY = [b"\xf1\xf2\xf3\xf4", b"SGNC", b'"type"', b'"sdp"', b'"offer"', b'"answer"', b'"join"', b'"codec"',
              b'"generator"', b'"encoder"', b'"groups"', b'"steps"', b'"rows"', b'"width"', b"\xcf", b"\xcb", b"\xc4", b'"fb"', b'"bwe"',
              b"m=application", b"a=fingerprint:sha-256", b"a=ice-ufrag:", b"a=candidate:"]


CRASH_EXIT = 3


class MemoryBlowup(Exception):
    """One input raised the process's peak RSS by more than the allowed amount."""


def report_crash(exc: BaseException, data: bytes, prefix: Path) -> None:
    """Write the input, print one parsable ``FINDING`` line and the traceback, and end the process at once.

    (Done here rather than by atheris: its crash path runs interpreter shutdown, which can outlive libFuzzer's
    alarm and die before the input is written.)
    """
    path = Path(f"{prefix}-crash-{hashlib.sha1(data).hexdigest()}")
    path.write_bytes(data)
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{f.filename.split('/sganc_stream/')[-1]}:{f.lineno}" for f in reversed(frames) if "/sganc_stream/" in f.filename),
                 f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")
    message = " ".join(str(exc).split())[:200]
    print(f"FINDING crash {type(exc).__name__} at {where}: {message} | input {path} ({len(data)} bytes)", flush=True)
    traceback.print_exception(exc, file=sys.stdout)
    sys.stdout.flush()
    os._exit(CRASH_EXIT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fuzz.run", description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("--runs", type=int, default=10_000, help="inputs to run, seeds included (default 10000)")
    p.add_argument("--seconds", type=int, default=0, help="stop after this many seconds (default: no limit)")
    p.add_argument("--corpus", type=Path, help="corpus folder, grown by the run (default: a temporary one)")
    p.add_argument("--artifacts", type=Path, default=Path("."), help="where crashing inputs are written")
    p.add_argument("--rss-limit-mb", type=int, default=3072)
    p.add_argument("--input-memory-mb", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (0: libFuzzer picks one)")
    args = p.parse_args(argv)

    import atheris
    import torch

    torch.set_num_threads(1)
    with atheris.instrument_imports(include=["sganc_stream"]):
        import importlib

        for name in INSTRUMENTED:
            importlib.import_module(name)
    from fuzz.targets import TARGETS, HANG_SECONDS

    if args.target not in TARGETS:
        p.error(f"unknown target {args.target!r} (one of {', '.join(TARGETS)})")
    target = TARGETS[args.target]
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"sganc-fuzz-corpus-{target.name}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds()
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
        target.run(seed)  # warm-up: lazy imports and fixtures are not an input's time; a seed must pass
    dictionary = corpus.parent / f".{target.name}.dict"
    dictionary.write_text("".join('"' + "".join("\\x%02x" % b for b in word) + '"\n' for word in DICTIONARY))
    args.artifacts.mkdir(parents=True, exist_ok=True)

    limit_mb = args.input_memory_mb

    def one_input(data: bytes) -> None:
        reset_peak_rss()
        before = peak_rss_mb()  # the resident size now: the peak was just reset
        try:
            target.run(data)
            grew = peak_rss_mb() - before
            if grew > limit_mb:
                raise MemoryBlowup(f"{len(data)}-byte input raised peak RSS by {grew:.0f} MB")
        except Exception as exc:  # noqa: BLE001 - every exception reaching here is a finding
            report_crash(exc, data, args.artifacts / target.name)

    fuzzer_args = [sys.argv[0], str(corpus), f"-runs={args.runs}", f"-timeout={max(int(HANG_SECONDS), 1)}",
                   f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={target.max_len}", "-print_final_stats=1",
                   f"-artifact_prefix={args.artifacts}/{target.name}-", f"-dict={dictionary}", f"-seed={args.seed}"]
    if args.seconds:
        fuzzer_args.append(f"-max_total_time={args.seconds}")
    atheris.Setup(fuzzer_args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
