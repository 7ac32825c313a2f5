"""Live call over a real (namespaced) network: two `sganc-call` processes in two network namespaces joined by a
user-space relay that loses, delays, reorders and caps their UDP (tests/netns.py, ``RelayPair``; needs root).

Conditions (each a fresh call of ``--duration`` seconds; the relay applies each to both directions):

- ``clean``: the relay only forwards;
- ``loss5``, ``loss20``: 5 % / 20 % of the datagrams lost at random;
- ``burst20``: 20 % lost in bursts of 3 datagrams on average (Gilbert–Elliott);
- ``cap``: a bandwidth cap of ``--cap-kbit`` (60) per direction with a 250 ms drop-tail queue: on this shared
  machine each side sends 40–70 kbit/s on the wire (about 5 fps), so the cap binds for the busier direction;
- ``jitter``: 40 ms delay + up to 40 ms jitter, 5 % of the datagrams held back a further 60 ms (reordering);
- ``long``: ``clean`` for ``--long-duration`` seconds (120 by default): does latency grow over a longer call?

Datagrams, not call messages, are lost: DTLS and ICE packets, SCTP SACKs, hellos and keyframe requests too, and a
call message larger than one datagram is lost when any of its datagrams is. The figures are call_loopback.py's (from
the peers' JSON-lines logs: fps, latency p50/p95 capture → display on the one clock both namespaces share, frames
shown, recovery from an unbridged gap to the repairing intra frame, latency growth = median of the last quarter
minus that of the first, per-stage ms, start-up to joined), plus the relay's own counts per direction (datagrams,
lost, dropped by the queue, reordered). Report the load with every figure (``load_average``): on a shared CPU the
timings say as much about the machine as about the call.

    python3 benchmarks/call_netns.py [--duration 40] [--conditions clean,loss5,loss20,burst20,cap,jitter,long]
        [--cap-kbit 60] [--queue-ms 250] [--target-kbps K] [--peers CHECKOUT] [--model M] [--runtime onnx|torch] [--out call_netns]

Writes benchmarks/results/<out>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
from call_loopback import DEFAULT_A, DEFAULT_B, events, finish, summarize  # noqa: E402
from common import write_result  # noqa: E402
from netns import ADDRESSES, Impairment, RelayPair, unavailable  # noqa: E402

CONDITIONS = {
    "clean": Impairment(),
    "loss5": Impairment(loss=0.05),
    "loss20": Impairment(loss=0.2),
    "burst20": Impairment(loss=0.2, loss_burst=3.0),
    "cap": Impairment(rate_kbit=60.0, queue_ms=250.0),
    "jitter": Impairment(delay_ms=40.0, jitter_ms=40.0, reorder=0.05, reorder_ms=60.0),
    "long": Impairment(),
}
ENV = {k: v for k, v in os.environ.items() if k != "SGANC_RTC_LOOPBACK"} | {"OMP_NUM_THREADS": "1"}
LAUNCH = "import sys; sys.path.insert(0, {repo!r}); from sganc_stream.rtc.{module} import {main}; sys.exit({main}())"


def python(module: str, main: str, *args: Any, repo: Path = REPO) -> list[str]:
    return [sys.executable, "-c", LAUNCH.format(repo=str(repo), module=module, main=main), *map(str, args)]


def run_condition(name: str, imp: Impairment, duration: float, args: argparse.Namespace, model: Path,
                  work: Path) -> dict[str, Any]:
    print(f"call_netns: {name} ({duration:g} s) {imp}", file=sys.stderr, flush=True)
    logs = {k: work / f"{name}_{k}.jsonl" for k in "AB"}
    with RelayPair(f"sgn{os.getpid() % 1000}", replace(imp, seed=args.seed)) as net:
        server = net.popen(0, python("signaling", "signal_main", "--host", ADDRESSES[0], "--port", "0", "--duration",
                                     duration + 300), ENV)
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        extra = (["--runtime", args.runtime] if args.runtime else []) + \
            (["--target-kbps", args.target_kbps] if args.target_kbps else [])
        peers = [net.popen(side, python("cli", "call_main", "--signal", url, "--room", name, "--token", "bench",
                                        "--model", model, "--video", video, "--headless", "--quiet",
                                        "--duration", duration, "--log", logs[key], "--name", key, *extra,
                                        repo=args.peers), ENV)
                 for side, key, video in ((0, "A", args.video_a), (1, "B", args.video_b))]
        try:
            for proc in peers:
                finish(proc, duration + 180)
        finally:
            server.terminate()
            server.communicate(timeout=30)
        relay = [asdict(d) for d in net.relay.stats]
    out = summarize(events(logs["A"]), events(logs["B"]))
    return {"impairment": asdict(imp), "duration_s": duration, "relay": {"a_to_b": relay[0], "b_to_a": relay[1]},
            "load_average": os.getloadavg(), **out}


def commit(repo: Path) -> str | None:
    """The checked-out commit of ``repo`` (None when it is not a git checkout)."""
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded default face model)")
    p.add_argument("--runtime", choices=["torch", "onnx"], help="the peers' --runtime (default: theirs, onnx)")
    p.add_argument("--video-a", type=Path, default=DEFAULT_A)
    p.add_argument("--video-b", type=Path, default=DEFAULT_B)
    p.add_argument("--duration", type=float, default=40.0, help="seconds per condition (default 40)")
    p.add_argument("--long-duration", type=float, default=120.0, help="seconds of the 'long' condition (default 120)")
    p.add_argument("--cap-kbit", type=float, default=60.0, help="the 'cap' condition's rate per direction")
    p.add_argument("--queue-ms", type=float, default=250.0, help="the 'cap' condition's drop-tail queue (default 250)")
    p.add_argument("--peers", type=Path, default=REPO, help="the checkout whose code the peers run (default this one; "
                                                           "another, e.g. one without congestion control, to compare)")
    p.add_argument("--target-kbps", type=float, help="the peers' --target-kbps (rate control; congestion control's "
                                                     "ceiling): default none, a fixed step")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--seed", type=int, default=1, help="seed of the relay's random draws")
    p.add_argument("--out", default="call_netns", help="results name under benchmarks/results/")
    args = p.parse_args()
    why = unavailable()
    if why is not None:
        raise SystemExit(f"call_netns: cannot make network namespaces here: {why}")
    names = args.conditions.split(",")
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise SystemExit(f"call_netns: unknown condition(s) {', '.join(unknown)} (known: {', '.join(CONDITIONS)})")
    for clip in (args.video_a, args.video_b):
        if not clip.is_file():
            raise SystemExit(f"call_netns: clip not found: {clip} (pass --video-a/--video-b)")
    from sganc_stream.assets import default_face_model
    from sganc_stream.bundle import load_bundle
    from sganc_stream.onnx_runtime import load_onnx_face_model

    model = args.model or default_face_model()
    model_id = load_bundle(model, framework="numpy").model_id
    if args.runtime != "torch":  # exported (E quantized) before any call, so that no peer spends its first seconds on it
        load_onnx_face_model(model, encode=True, encoder_precision="int8")
    work = Path(tempfile.mkdtemp(prefix="call-netns-"))
    results: dict[str, Any] = {}
    for name in names:
        imp = CONDITIONS[name]
        if name == "cap":
            imp = replace(imp, rate_kbit=args.cap_kbit, queue_ms=args.queue_ms)
        try:
            results[name] = run_condition(name, imp, args.long_duration if name == "long" else args.duration, args,
                                          model, work)
        except SystemExit as exc:  # a peer failed: said in the results, the other conditions still run
            print(f"call_netns: {name}: {exc}", file=sys.stderr)
            results[name] = {"impairment": asdict(imp), "error": str(exc), "load_average": os.getloadavg()}
    path = write_result(args.out, {
        "model": {"path": str(model), "model_id": model_id}, "clips": {"A": str(args.video_a), "B": str(args.video_b)},
        "runtime": args.runtime or "onnx (the peers' default)", "target_kbps": args.target_kbps,
        "peers": str(args.peers), "peers_commit": commit(args.peers), "work": str(work),
        "results": results})
    print(json.dumps(results, indent=1))
    print(f"call_netns: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
