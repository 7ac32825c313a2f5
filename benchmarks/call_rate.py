"""Rate control in the live call: one-way calls in one process over the test transport (no network), the embedded
face model, a shared clip as the camera, at each ``--target-kbps``.

    python3 benchmarks/call_rate.py [--targets 20 45] [--seconds 30] [--clip dreamtalk_mead/...mp4]
        [--residual-table empirical] [--out call_rate]

Per target: frames sent and shown, the steps used, the packet rate (payload + §3 framing, what rate control counts)
at the hello's nominal fps and over the frames actually sent, and whether every shown frame's integer state equals
the sender's (``state_crc``). Writes benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import FaceModel, load_face_model
from sganc_stream.rtc.channel import memory_pair
from sganc_stream.rtc.session import Peer, PeerOptions

CLIPS = Path("/work/shared/data/clips")


def events(log: Path, ev: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["ev"] == ev]


def one_call(model: FaceModel, clip: Path, target: float, seconds: float, folder: Path,
             residual: str = "irwin_hall") -> dict[str, Any]:
    codec = model.codec
    params = StreamParams("open", 10, codec.step_index(min(codec.steps)), residual=residual, target_kbps=target)
    common = {"headless": True, "duration": seconds, "quiet": True}
    sender = Peer(model, PeerOptions(video=clip, receive=False, params=params, name="A", log=folder / "A.jsonl", **common))
    receiver = Peer(model, PeerOptions(send=False, name="B", log=folder / "B.jsonl", **common))
    ca, cb = memory_pair()

    async def body() -> list[Any]:
        return await asyncio.gather(sender.run(channel=ca), receiver.run(channel=cb), return_exceptions=True)

    asyncio.run(body())
    tx, shown = events(folder / "A.jsonl", "tx"), events(folder / "B.jsonl", "display")
    hello = events(folder / "B.jsonl", "hello")[0]
    bits = [8 * t["packet_bytes"] for t in tx]
    coded = {t["seq"]: t["state_crc"] for t in tx}
    span_s = (tx[-1]["capture_ms"] - tx[0]["capture_ms"]) / 1000
    return {"target_kbps": target, "hello_version": hello["version"], "hello_fps": hello["fps"], "frames_sent": len(tx),
            "frames_shown": len(shown), "sent_fps": round(len(tx) / span_s, 2) if span_s > 0 else None,
            "steps_used": sorted({t["step"] for t in tx}),
            "packet_kbps_nominal_fps": round(sum(bits) / len(bits) * hello["fps"] / 1000, 2),
            "packet_kbps_sent": round(sum(bits) / 1000 / span_s, 2) if span_s > 0 else None,
            "shown_states_exact": all(d["state_crc"] == coded[d["seq"]] for d in shown),
            "undecodable": len(events(folder / "B.jsonl", "undecodable"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[20.0, 45.0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clip", default="dreamtalk_mead/M030_front_neutral_level1_001.mp4", help="under " + str(CLIPS))
    ap.add_argument("--residual-table", choices=["irwin_hall", "empirical"], default="irwin_hall",
                    help="the sender's residual table (empirical: the hello names it, a v3/v4 header)")
    ap.add_argument("--out", default="call_rate", help="results name under benchmarks/results/")
    args = ap.parse_args()
    model = load_face_model(default_face_model())
    rows = []
    for target in args.targets:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_call(model, CLIPS / args.clip, target, args.seconds, Path(tmp), args.residual_table))
        print(json.dumps(rows[-1]))
    path = write_result(args.out, {"model_id": model.model_id, "presets": list(model.codec.steps), "clip": args.clip,
                                   "seconds": args.seconds, "residual_table": args.residual_table, "rows": rows})
    print(f"results in {path}")
    return 0 if all(r["shown_states_exact"] and not r["undecodable"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
