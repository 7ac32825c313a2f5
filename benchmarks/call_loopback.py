"""Live call on loopback: two `sganc-call` processes with clips as cameras, through `sganc-signal` on 127.0.0.1.

Scenarios (each a fresh call): no loss; injected loss of 5 % and 20 % on every message each side sends (seeded;
hellos and keyframe requests included); and a rejoin, where side B is killed (SIGKILL) mid-call and started again.
Figures come from the JSON-lines logs the peers write (see ``sganc_stream.rtc.stats``):

- latency: capture → display, per displayed frame, both directions pooled (median, p95). Both processes read
  the same wall clock (``time.time()``), so no clock offset enters.
- fps: frames displayed per second of the call's active time (first to last decoded frame), per direction.
- latency growth: median latency of the last quarter of the call minus that of the first quarter.
- payload / channel / wire kbps: bytes of the messages sent (payload = message bytes: the packet, plus its redundant
  copies, plus the retransmissions answering NACKs; channel = with SCTP DATA chunk framing; wire = estimated
  IPv4/UDP/DTLS/SCTP, ``rtc.wire``), over the sender's active time; redundancy share: message bytes beyond the
  packets themselves (redundancy and retransmissions).
- received / shown: frames decoded (shown) / frames the other side sent; restored: lost frames whose state came from
  the redundancy a later message carried or from a retransmission.
- repair: gaps redundancy could not bridge that a retransmission repaired (SPEC §8.7): NACKs sent, retransmissions,
  and from detecting the gap to decoding the frame shown after it (median, p95, max).
- recovery: from the receiver detecting a gap it could not bridge (nor repair) to decoding the intra frame that
  resynchronises it (median, p95, max); keyframe requests and intra frames sent.
- per-stage ms (medians): align, E, T, rans (quantise + rANS), T_inv (the sender's reconstruction, run only for a
  --paste-back self view) on the sender; decode (rANS + T⁻¹), its T⁻¹ alone, and render (G) on the receiver; the
  worst event-loop lag seen (the loop must stay free for ICE/DTLS/SCTP).
- startup: seconds from each process's start to joining the room (everything loaded by then), and the process's
  age after each start-up step (Python and the CLI's imports, the call's imports, the landmark models, the model,
  encoder and camera), and the CPU seconds the process had used by then (what the steps cost on an idle machine).
- no face: no-face packets sent while a camera showed no face, and no-face pictures shown; every other figure counts
  face frames only (the bytes of no-face packets, 7-11 each, are not in the kbps).
- rejoin: from the restarted B joining the room to A decoding its first frame (signaling + ICE + DTLS + SCTP +
  hello + first intra), and the same for B2 decoding A.

Usage: ``python benchmarks/call_loopback.py [--model M] [--duration 20] [--video-a CLIP --video-b CLIP]``. Report
the machine's load with any figure (``load_average_at_end``): timings mean little on a shared CPU.
Without ``--model`` it uses the embedded default face model; ``--micro`` builds the random-weight micro model of
the tests instead (plumbing figures only: its bitrate says nothing about the real codec).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "clips"
DEFAULT_A = SHARED / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
DEFAULT_B = SHARED / "mead_eamm" / "happy.mp4"
LAUNCH = "import sys; from sganc_stream.rtc.{0} import {1}; sys.exit({1}())"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SGANC_RTC_LOOPBACK": "1"}


def spawn(module: str, main: str, *args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", LAUNCH.format(module, main), *map(str, args)], env=ENV, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def events(log: Path, ev: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if ev is None or r["ev"] == ev]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 1)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def span(rows: list[dict[str, Any]]) -> float:
    return rows[-1]["t"] - rows[0]["t"] if len(rows) > 1 else 0.0


def direction(sender: list[dict[str, Any]], receiver: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures for one direction of the call, from the sender's and the receiver's log records."""
    from sganc_stream.rtc.wire import sctp_bytes, wire_bytes

    def ev(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["ev"] == name]

    tx, rx, shown = ev(sender, "tx"), ev(receiver, "rx"), ev(receiver, "display")
    rtx = [r for r in ev(sender, "rtx") if r["bytes"]]  # retransmissions (an unserved NACK is logged with 0 bytes)
    repairs = [r["repair_ms"] for r in ev(receiver, "repaired")]
    active = span(tx)
    nbytes = [r["bytes"] for r in tx + rtx]
    kbps = (lambda total: round(total * 8 / active / 1000, 2) if active else None)
    syncs = [s["recovery_ms"] for s in ev(receiver, "sync")]
    fb = [f["estimate_kbps"] for f in ev(sender, "feedback")]
    lat = [d["latency_ms"] for d in shown]
    quarter = max(len(lat) // 4, 1)
    return {
        "sent": len(tx), "received": len(rx), "displayed": len(shown),
        "received_fraction": round(len(rx) / len(tx), 3) if tx else None,
        "shown_fraction": round(len(shown) / len(tx), 3) if tx else None,
        "restored": sum(r.get("restored", 0) for r in rx),
        "tx_fps": round(len(tx) / active, 2) if active else None,
        "display_fps": round(len(shown) / span(shown), 2) if span(shown) else None,
        "payload_kbps": kbps(sum(nbytes)), "channel_kbps": kbps(sum(map(sctp_bytes, nbytes))),
        "wire_kbps": kbps(sum(map(wire_bytes, nbytes))),
        "redundancy_share": round(1 - sum(r["packet_bytes"] for r in tx) / sum(nbytes), 3) if nbytes else None,
        "intra_sent": sum(r["type"] == "intra" for r in tx),
        "no_face_sent": len(ev(sender, "tx_no_face")), "no_face_shown": len(ev(receiver, "display_no_face")),
        "gaps": len(ev(receiver, "gap")), "keyframe_requests": len(ev(receiver, "keyframe_request")),
        "recovery_ms": {"n": len(syncs), "median": median(syncs), "p95": pct(syncs, 0.95),
                        "max": round(max(syncs), 1) if syncs else None},
        "nacks": len(ev(receiver, "nack")), "retransmissions": len(rtx),
        "repair_ms": {"n": len(repairs), "median": median(repairs), "p95": pct(repairs, 0.95),
                      "max": round(max(repairs), 1) if repairs else None},
        "latency_growth_ms": round(statistics.median(lat[-quarter:]) - statistics.median(lat[:quarter]), 1)
        if len(lat) >= 8 else None,
        "stage_median_ms": {  # where capture-to-display goes
            "capture_to_encode_start": median([r["encode_start_ms"] for r in tx]),
            **{k: median([r[f"{k}_ms"] for r in tx if f"{k}_ms" in r]) for k in ("align", "E", "T", "rans", "T_inv")},
            "encode": median([r["encode_ms"] for r in tx]),
            "capture_to_received": median([r["t"] * 1000 - r["capture_ms"] for r in rx]),
            "decode": median([r["decode_ms"] for r in shown]),
            "decode_T_inv": median([r["T_inv_ms"] for r in shown if "T_inv_ms" in r]),
            "render_G": median([r["render_ms"] for r in shown])},
        "loop_lag_max_ms": max((r["loop_lag_max_ms"] for r in ev(receiver, "stats")), default=None),
        # congestion control (rtc.congestion): frames the sender skipped for the receiver's estimate, the estimates it
        # received (wire kbit/s), and the quantization steps its frames were coded with
        "cc_skipped": max((r.get("cc_skipped") or 0 for r in ev(sender, "stats")), default=0),
        "estimate_kbps": {"n": len(fb), "median": median(fb), "min": min(fb, default=None), "max": max(fb, default=None)},
        "steps": {str(k): v for k, v in sorted(Counter(r["step"] for r in tx).items())},
        "latencies": lat,
    }


def summarize(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    dirs = {"a_to_b": direction(a, b), "b_to_a": direction(b, a)}
    lat = [x for d in dirs.values() for x in d.pop("latencies")]
    joined = [r for r in a + b if r["ev"] == "joined"]
    return {"latency_ms": {"median": median(lat), "p95": pct(lat, 0.95), "n": len(lat)},
            "startup_to_joined_s": {r["peer"]: r.get("process_age_s") for r in joined},
            "startup_steps_s": {r["peer"]: r.get("startup_s") for r in joined},
            "startup_steps_cpu_s": {r["peer"]: r.get("startup_cpu_s") for r in joined},
            "runtime": {r["peer"]: r.get("runtime") for r in joined},
            "encoder_precision": {r["peer"]: r.get("encoder_precision") for r in joined}, **dirs}


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    if proc.returncode not in (0, -signal.SIGKILL, 130):
        raise SystemExit(f"call_loopback: a peer failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return err


def wait_for(log: Path, ev: str, count: int, timeout: float) -> None:
    end = time.time() + timeout
    while len(events(log, ev)) < count and time.time() < end:
        time.sleep(0.2)


def run_scenario(name: str, args: argparse.Namespace, url: str, model: Path, work: Path, loss: float,
                 rejoin: bool = False) -> dict[str, Any]:
    print(f"call_loopback: {name} ({args.duration:g} s)", file=sys.stderr, flush=True)
    common = ["--signal", url, "--room", name, "--token", "bench", "--model", model, "--headless", "--quiet"]
    if args.pre_aligned:
        common.append("--pre-aligned")
    if args.max_fps:
        common += ["--max-fps", args.max_fps]
    if args.redundancy is not None:
        common += ["--redundancy", args.redundancy]
    if args.runtime is not None:
        common += ["--runtime", args.runtime]
    if args.encoder_precision is not None:
        common += ["--encoder-precision", args.encoder_precision]
    if args.residual_table is not None:
        common += ["--residual-table", args.residual_table]
    if args.no_retransmit:
        common.append("--no-retransmit")
    logs = {k: work / f"{name}_{k}.jsonl" for k in ("A", "B", "B2")}

    def peer(key: str, video: Path, duration: float, seed: int) -> subprocess.Popen[str]:
        return spawn("cli", "call_main", *common, "--video", video, "--duration", duration, "--log", logs[key],
                     "--name", key, "--loss", loss, "--seed", seed, "--record", work / f"{name}_{key}.mp4")

    if not rejoin:
        a, b = peer("A", args.video_a, args.duration, 1), peer("B", args.video_b, args.duration, 2)
        finish(a, args.duration + 120)
        finish(b, args.duration + 120)
        return scenario_figures(work, name, loss)
    a = peer("A", args.video_a, args.duration * 2 + 60, 1)
    b = peer("B", args.video_b, args.duration * 10, 2)
    wait_for(logs["A"], "rx", int(args.duration * 2), args.duration + 120)
    b.kill()
    finish(b, 30)
    wait_for(logs["A"], "left", 1, 30)
    b2 = peer("B2", args.video_b, args.duration, 3)
    finish(b2, args.duration + 120)
    a.send_signal(signal.SIGINT)
    finish(a, 60)
    joined = events(logs["B2"], "joined")
    if not joined:
        raise SystemExit("call_loopback: the restarted peer never joined")
    cut = joined[0]["t"]
    a_rows = events(logs["A"])
    a_first, a_second = [r for r in a_rows if r["t"] < cut], [r for r in a_rows if r["t"] >= cut]
    first_a = [r for r in a_second if r["ev"] == "rx"]
    first_b2 = events(logs["B2"], "rx")
    before, after = summarize(a_first, events(logs["B"])), summarize(a_second, events(logs["B2"]))
    return {
        "hello_events_on_A": len(events(logs["A"], "hello")),
        "rejoin_to_first_frame_s": {  # from the restarted B joining the room (its model already loaded)
            "A_decodes_B2": round(first_a[0]["t"] - cut, 2) if first_a else None,
            "B2_decodes_A": round(first_b2[0]["t"] - cut, 2) if first_b2 else None},
        "before_kill": before, "after_rejoin": after,
    }


def scenario_figures(work: Path, name: str, loss: float) -> dict[str, Any]:
    """The figures of a two-peer scenario from its logs and recordings in ``work``."""
    out = summarize(events(work / f"{name}_A.jsonl"), events(work / f"{name}_B.jsonl"))
    out["recorded_frames"] = {k: _count(work / f"{name}_{k}.mp4") for k in ("A", "B")}
    return {"loss": loss, **out}


def _count(path: Path) -> int | None:
    if not path.exists():
        return None
    from sganc_stream.video import VideoReader
    with VideoReader(path) as r:
        return sum(1 for _ in r)


def run_all(args: argparse.Namespace, model: Path, work: Path, scenarios: dict[str, float]) -> dict[str, Any]:
    server = spawn("signaling", "signal_main", "--port", "0", "--duration", "7200")
    assert server.stdout is not None
    url = server.stdout.readline().split()[-1]
    results: dict[str, Any] = {}
    try:
        for name in args.scenarios.split(","):
            if name == "rejoin":
                results[name] = run_scenario(name, args, url, model, work, 0.0, rejoin=True)
            else:
                results[name] = run_scenario(name, args, url, model, work, scenarios[name])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the server may wait for sockets the killed peers left half-open
            server.kill()
            server.wait()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded default face model)")
    p.add_argument("--micro", action="store_true", help="use the tests' random-weight micro model (plumbing only)")
    p.add_argument("--video-a", type=Path, default=DEFAULT_A)
    p.add_argument("--video-b", type=Path, default=DEFAULT_B)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per call scenario (default 20)")
    p.add_argument("--max-fps", type=float, help="cap each side's send rate (CPU-bound models)")
    p.add_argument("--pre-aligned", action="store_true", help="skip face alignment (clips used as aligned faces)")
    p.add_argument("--redundancy", type=int, help="frame packets carried in each message (default: the peers')")
    p.add_argument("--runtime", choices=["torch", "onnx"], help="the peers' --runtime (default: theirs, onnx)")
    p.add_argument("--encoder-precision", choices=["fp32", "int8"],
                   help="the senders' --encoder-precision (default: theirs, int8 with --runtime onnx)")
    p.add_argument("--residual-table", choices=["auto", "irwin_hall", "empirical"],
                   help="the senders' residual table (default: theirs, auto: empirical where the model has the table "
                        "for their g, else irwin_hall)")
    p.add_argument("--no-retransmit", action="store_true",
                   help="the peers answer no NACKs: gaps redundancy cannot bridge cost a keyframe (SPEC §8.7)")
    p.add_argument("--scenarios", default="loss0,loss5,loss20,rejoin")
    p.add_argument("--out", default="call_loopback", help="results name under benchmarks/results/")
    p.add_argument("--from-logs", type=Path, metavar="WORK",
                   help="make no calls: recompute the figures from the logs an earlier run left in WORK")
    args = p.parse_args()
    for clip in (args.video_a, args.video_b):
        if not clip.is_file():
            raise SystemExit(f"call_loopback: clip not found: {clip} (pass --video-a/--video-b)")
    work = args.from_logs or Path(tempfile.mkdtemp(prefix="call-loopback-"))
    if args.micro:
        sys.path.insert(0, str(REPO / "tests"))
        from rtc_data import micro_bundle
        model = micro_bundle(work)
    else:
        from sganc_stream.assets import default_face_model
        model = args.model or default_face_model()
    scenarios = {"loss0": 0.0, "loss5": 0.05, "loss20": 0.2}
    results: dict[str, Any] = {}
    if args.runtime != "torch" and args.from_logs is None:  # exported (and E quantized) before any call: no peer
        from sganc_stream.onnx_runtime import load_onnx_face_model  # spends its start on it

        load_onnx_face_model(model, encode=True, encoder_precision=args.encoder_precision or "int8")
    if args.from_logs is not None:
        results = {name: scenario_figures(work, name, scenarios[name]) for name in args.scenarios.split(",")}
    else:
        results = run_all(args, model, work, scenarios)
    from sganc_stream.pipeline import load_face_model
    m = load_face_model(model)
    path = write_result(args.out, {
        "model": {"path": str(model), "model_id": m.model_id, "size": m.size, "micro": args.micro},
        "clips": {"A": str(args.video_a), "B": str(args.video_b)}, "duration_s": args.duration,
        "max_fps": args.max_fps, "pre_aligned": args.pre_aligned, "redundancy": args.redundancy,
        "runtime": args.runtime, "encoder_precision": args.encoder_precision, "retransmit": not args.no_retransmit,
        "residual_table": args.residual_table,
        "load_average_at_end": os.getloadavg(),
        "work": str(work), "results": results})
    print(json.dumps(results, indent=1))
    print(f"call_loopback: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
