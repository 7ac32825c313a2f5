"""Fuzzing at scale: N inputs over every target of fuzz/targets.py, in parallel processes; findings, speed, memory.

    python3 benchmarks/fuzz_campaign.py --inputs 1000000 --jobs 1          # the full run (hours on one core)
    python3 benchmarks/fuzz_campaign.py --quick                             # CI: ~20 000 inputs, 3 s per target and chunk

Each target gets a share of ``--inputs`` by its weight, run in chunks of at most ``--chunk`` inputs; each chunk is
one ``python3 -m fuzz.run`` process (libFuzzer through atheris, coverage-guided, corpus kept per target across
chunks), ``--jobs`` chunks at a time. A chunk that finds something stops there; the rest of its inputs run in a new
process (at most ``--max-findings`` per target). Reported per target and in total: inputs run, findings by kind
(``crash``: an exception other than the documented SgancError family, or an input raising peak RSS by more than
256 MB; ``hang``: an input over 1 s, libFuzzer's ``-timeout``, confirmed by replaying it in a fresh process
(``fuzz.replay``: over 1 CPU second there; a timeout that replays faster was the machine's load, not the input,
and is listed as ``load`` without counting as a finding); ``memory``: the process over ``--rss-limit-mb``),
inputs per second (chunk wall time, process start-up included), peak RSS of the fuzzing processes, and the
slowest input. Results go to benchmarks/results/<out>.json with the provenance record; the exit status is 1 when
anything was found. Found inputs stay in ``<workdir>/artifacts`` (replay: ``python3 -m fuzz.replay TARGET FILE``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from threading import Lock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from fuzz.targets import HANG_SECONDS, TARGETS  # noqa: E402


@dataclass
class TargetRun:
    name: str
    planned: int
    seconds_cap: float
    inputs: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    slowest_s: float = 0.0
    chunks: int = 0
    findings: list[dict[str, object]] = field(default_factory=list)
    load_timeouts: list[dict[str, object]] = field(default_factory=list)  # timeouts that replay fast: machine load


def parse_output(text: str) -> dict[str, object]:
    """What one fuzz.run process reported: inputs run, slowest input, and the finding (if any)."""
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", text))
    executed = int(stat.get("number_of_executed_units", 0))
    if not executed:  # stopped by a finding: the last status line tells how far it got
        counts = [int(n) for n in re.findall(r"^#(\d+)\s", text, re.M)]
        executed = max(counts, default=0)
    finding = None
    m = re.search(r"^FINDING crash (.*)$", text, re.M)
    if m:
        finding = {"kind": "crash", "what": m.group(1)}
    elif "ERROR: libFuzzer: timeout" in text:
        finding = {"kind": "hang", "what": (re.search(r"timeout after (\d+) seconds", text) or [None, "?"])[1] + " s"}
    elif "ERROR: libFuzzer: out-of-memory" in text:
        finding = {"kind": "memory", "what": (re.search(r"out-of-memory \((.*?)\)", text) or [None, "?"])[1]}
    if finding is not None and "input" not in str(finding["what"]):
        art = re.search(r"Test unit written to (\S+)", text)
        finding["what"] = f"{finding['what']} | input {art.group(1) if art else '?'}"
    return {"executed": executed, "slowest_s": float(stat.get("slowest_unit_time_sec", 0)), "finding": finding}


def confirm_hang(name: str, finding: dict[str, object]) -> dict[str, object]:
    """A libFuzzer timeout (wall clock) replayed in a fresh process: still a hang only over HANG_SECONDS CPU time."""
    art = re.search(r"input (\S+)", str(finding["what"]))
    if art is None or not Path(art.group(1)).is_file():
        return finding
    out = subprocess.run([sys.executable, "-m", "fuzz.replay", name, art.group(1)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    cpu = re.search(r": ([0-9.]+) CPU s$", out.stdout.strip())
    if cpu is None or float(cpu.group(1)) > HANG_SECONDS:
        return finding
    return {**finding, "kind": "load", "what": f"{finding['what']} | replayed in {float(cpu.group(1)):.4f} CPU s"}


def run_chunk(name: str, runs: int, seconds: float, workdir: Path, seed: int, rss_limit_mb: int,
              nice: int) -> tuple[dict[str, object], float, float, str]:
    cmd = [sys.executable, "-m", "fuzz.run", name, f"--runs={runs}", f"--seconds={max(int(seconds), 1) if seconds else 0}",
           f"--corpus={workdir / 'corpus' / name}", f"--artifacts={workdir / 'artifacts'}", f"--seed={seed}",
           f"--rss-limit-mb={rss_limit_mb}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = workdir / "logs" / f"{name}-{seed}.txt"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    result = parse_output(text)
    if result["finding"] is None and proc.returncode != 0:
        result["finding"] = {"kind": "harness", "what": f"fuzz.run exited with status {proc.returncode}; see {log}"}
    return result, wall, usage.ru_maxrss / 1024, str(log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs over all targets (default 1,000,000)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="processes at a time")
    p.add_argument("--chunk", type=int, default=100_000, help="most inputs per process (default 100,000)")
    p.add_argument("--max-seconds-per-target", type=float, default=0,
                   help="cap each target's total fuzzing time (default: none; the run then ends by input count)")
    p.add_argument("--targets", nargs="*", default=list(TARGETS), help="subset of targets (default: all)")
    p.add_argument("--workdir", type=Path, help="corpus, artifacts and logs (default: a temporary folder)")
    p.add_argument("--rss-limit-mb", type=int, default=3072)
    p.add_argument("--max-findings", type=int, default=3, help="stop a target after this many findings")
    p.add_argument("--nice", type=int, default=0, help="run the fuzzing processes at this niceness")
    p.add_argument("--out", default="fuzz", help="results name: benchmarks/results/<out>.json (default fuzz)")
    p.add_argument("--quick", action="store_true",
                   help="CI budget: 20,000 inputs, 3 s per target, results to fuzz_quick.json")
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.max_seconds_per_target, args.chunk = 20_000, 3, 20_000
        args.out = "fuzz_quick" if args.out == "fuzz" else args.out
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets: {', '.join(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sganc-fuzz-"))
    for sub in ("corpus", "artifacts", "logs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    total_weight = sum(TARGETS[t].weight for t in args.targets)
    runs: dict[str, TargetRun] = {}
    per_target: list[list[tuple[str, int, float]]] = []
    for name in args.targets:
        planned = max(1, round(args.inputs * TARGETS[name].weight / total_weight))
        cap = args.max_seconds_per_target or 0
        runs[name] = TargetRun(name, planned, cap)
        sizes = [min(args.chunk, planned - start) for start in range(0, planned, args.chunk)]
        per_target.append([(name, size, cap * size / planned if cap else 0) for size in sizes])
    # round-robin over targets, so that parallel processes work on different ones
    queue = [item for group in zip_longest(*per_target) for item in group if item is not None]

    lock = Lock()
    seed_counter = iter(range(1, 1 << 30))
    started = time.perf_counter()

    def work(item: tuple[str, int, float]) -> None:
        name, size, seconds = item
        left, left_s = size, seconds
        while left > 0:
            with lock:
                run = runs[name]
                if len(run.findings) >= args.max_findings:
                    return
                seed = next(seed_counter)
            result, wall, rss, log = run_chunk(name, left, left_s or 0, workdir, seed, args.rss_limit_mb, args.nice)
            executed = int(result["executed"])  # type: ignore[arg-type]
            with lock:
                run.inputs += executed
                run.wall_s += wall
                run.chunks += 1
                run.peak_rss_mb = max(run.peak_rss_mb, rss)
                run.slowest_s = max(run.slowest_s, float(result["slowest_s"]))  # type: ignore[arg-type]
                finding = result["finding"]
                if finding is not None and finding["kind"] == "hang":  # type: ignore[index]
                    finding = confirm_hang(name, finding)  # type: ignore[arg-type]
                if finding is not None and finding["kind"] == "load":  # type: ignore[index]
                    run.load_timeouts.append({**finding, "log": log})  # type: ignore[dict-item]
                    print(f"{name}: timeout under load, not a hang: {finding['what']}", flush=True)  # type: ignore[index]
                elif finding is not None:
                    run.findings.append({**finding, "log": log})  # type: ignore[dict-item]
                    print(f"{name}: {finding['kind']}: {finding['what']}", flush=True)  # type: ignore[index]
                print(f"{name}: {run.inputs}/{run.planned} inputs, {run.inputs / max(run.wall_s, 1e-9):.0f}/s "
                      f"[{time.perf_counter() - started:.0f} s]", flush=True)
            if finding is None or finding["kind"] == "harness":  # type: ignore[index]
                return  # done (or a time cap ended it)
            left -= max(executed, 1)
            if left_s:
                left_s = max(left_s - wall, 0)
                if not left_s:
                    return

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        list(pool.map(work, queue))
    wall = time.perf_counter() - started

    targets = {}
    for name, r in runs.items():
        kinds = {k: sum(1 for f in r.findings if f["kind"] == k) for k in ("crash", "hang", "memory", "harness")}
        targets[name] = {"inputs": r.inputs, "planned": r.planned, "processes": r.chunks, "seconds": round(r.wall_s, 1),
                         "inputs_per_s": round(r.inputs / max(r.wall_s, 1e-9), 1), "peak_rss_mb": round(r.peak_rss_mb),
                         "slowest_input_s": r.slowest_s, **kinds, "findings": r.findings,
                         "timeouts_under_load": r.load_timeouts}
    total = sum(r.inputs for r in runs.values())
    found = sum(len(r.findings) for r in runs.values())
    summary = {"inputs": total, "findings": found,
               "crashes": sum(t["crash"] for t in targets.values()), "hangs": sum(t["hang"] for t in targets.values()),
               "memory": sum(t["memory"] for t in targets.values()), "harness_errors": sum(t["harness"] for t in targets.values()),
               "wall_s": round(wall, 1), "jobs": args.jobs, "inputs_per_s": round(total / max(wall, 1e-9), 1),
               "peak_rss_mb": max((t["peak_rss_mb"] for t in targets.values()), default=0),
               "slowest_input_s": max((r.slowest_s for r in runs.values()), default=0.0)}
    # A temporary workdir is removed when nothing in it is needed (no finding, no timeout log); CI runs this every
    # time, so a kept one per run would fill the disk.
    keep = args.workdir is not None or found > 0 or any(r.load_timeouts for r in runs.values())
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {"inputs": args.inputs, "chunk": args.chunk, "max_seconds_per_target": args.max_seconds_per_target,
                "hang_after_s": 1, "input_memory_limit_mb": 256, "rss_limit_mb": args.rss_limit_mb,
                "engine": "libFuzzer via atheris, coverage of sganc_stream", "workdir": str(workdir) if keep else None}
    path = write_result(args.out, {"settings": settings, "summary": summary, "targets": targets})
    print(f"{total} inputs in {wall:.0f} s ({summary['inputs_per_s']:.0f}/s with {args.jobs} process(es)): "
          f"{summary['crashes']} crashes, {summary['hangs']} hangs, {summary['memory']} memory, "
          f"{summary['harness_errors']} harness errors; peak RSS {summary['peak_rss_mb']} MB; slowest input "
          f"{summary['slowest_input_s']} s -> {path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
