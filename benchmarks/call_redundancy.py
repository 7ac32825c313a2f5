"""What in-band redundancy costs and saves in the live call: the call protocol run frame by frame over a lossy
test channel, with the real latent codec.

Each configuration codes the same latent sequence (W+ from the face model's encoder on a held-out clip, looped)
with the live call's sender (``rtc.transport.Redundancy``) and receives it with the live call's receiver
(``StreamReceiver``) and the real ``LatentStreamDecoder``; messages are dropped by ``rtc.channel.LossModel``
(independent, or in bursts) in both directions, so keyframe requests are lost too; a request reaches the encoder
``--rtt-ms`` after it is sent (rounded up to whole frames; one more frame for the encoder's pipeline). Nothing here is
timed: the figures are counts and bytes, the same on any machine.

Per configuration (mean over seeds): the loss the seeded draws realised; frames shown (the message's own frame decoded on arrival) as a fraction of the
frames sent; frames whose state was restored from redundancy; keyframes sent beyond the first; gaps that needed a
keyframe and their median recovery (frames from the loss to the repairing intra frame, as ms at the clip's rate);
message and wire kbps (``rtc.wire.wire_bytes``) and the wire cost relative to no redundancy at the same loss.
Every shown frame is checked to equal, bit for bit, what the encoder says the decoder reconstructs.

Usage: ``python benchmarks/call_redundancy.py [--model M] [--clip CLIP] [--frames 300] [--seeds 3]``
(``--latents F.npy`` reuses a (frames, rows, width) array instead of running the encoder).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sganc_stream.bitstream.packet import Packet, PacketType  # noqa: E402
from sganc_stream.latent.codec import LatentStreamDecoder, LatentStreamEncoder, StreamParams  # noqa: E402
from sganc_stream.latent.model import LatentCodecModel  # noqa: E402
from sganc_stream.rtc.channel import LossModel  # noqa: E402
from sganc_stream.rtc.transport import (FrameMessage, Hello, Late, Redundancy, StreamReceiver,  # noqa: E402
                                        parse_message)
from sganc_stream.rtc.wire import wire_bytes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "clips" / "mead_eamm" / "happy.mp4"
POLICIES = {"none": (0, True), "red1": (1, True), "red1_unfit": (1, False), "red2": (2, True), "red2_unfit": (2, False),
            "red3": (3, True)}
CHANNELS = {"loss0": (0.0, None), "loss5": (0.05, None), "loss20": (0.20, None), "loss20_burst3": (0.20, 3.0)}


@dataclass
class Outcome:
    sent: int = 0
    lost: int = 0  # frame messages dropped
    shown: int = 0
    restored: int = 0
    keyframes: int = 0
    gaps: int = 0
    message_bytes: int = 0
    wire: int = 0
    recoveries: list[int] | None = None


def simulate(codec: LatentCodecModel, latents: np.ndarray, params: StreamParams, fps: float, *, depth: int,
             fit: bool, loss: float, burst: float | None, seed: int, rtt_ms: float) -> Outcome:
    """One call direction, frame by frame (see the module doc); raises AssertionError if a shown frame differs
    from the encoder's reconstruction."""
    enc, dec = LatentStreamEncoder(codec, params), LatentStreamDecoder(codec, params)
    red = Redundancy(depth, fit)
    header = params.header(codec, fps, 0)
    now = [0.0]
    rx = StreamReceiver(Hello(codec.model_id, header, 0), clock=lambda: now[0])
    forward, back = LossModel(loss, burst, seed), LossModel(loss, burst, seed + 10_000)
    delay = math.ceil(rtt_ms * fps / 1000) + 1
    requests: list[int] = []  # frame index at which each delivered request reaches the encoder
    out, lost_at = Outcome(recoveries=[]), None
    for t, w in enumerate(latents):
        now[0] = t / fps
        if any(r <= t for r in requests):
            requests = [r for r in requests if r > t]
            enc.request_keyframe()
        coded = enc.encode(w)
        packet = Packet(coded.type, t, t, round(t * 1000 / fps), coded.payload)
        data = red.message(packet, fps)
        out.sent += 1
        out.keyframes += int(coded.type == PacketType.INTRA and t > 0)
        out.message_bytes += len(data)
        out.wire += wire_bytes(len(data))
        gaps = rx.gaps
        if forward(data):
            out.lost += 1
        else:
            msg = parse_message(data, rx.reader)
            delivery = rx.on_message(msg, len(data)) if isinstance(msg, FrameMessage) else None
            assert not isinstance(msg, Late)
            if delivery is not None:
                for ptype, payload in delivery.steps:
                    shown = dec.decode(ptype, payload)
                assert np.array_equal(shown, coded.recon), f"frame {t}: decoder state differs from the encoder's"
                out.shown += 1
                out.restored += delivery.recovered
                if lost_at is not None and delivery.recovered_ms is not None:
                    out.recoveries.append(t - lost_at)  # type: ignore[union-attr]
                    lost_at = None
        if rx.gaps > gaps:
            out.gaps += 1
            lost_at = t
            dec.reset()
        if rx.want_keyframe() and not back(rx.keyframe_request()):
            requests.append(t + delay)
    return out


def summarize(runs: list[Outcome], frames: int, fps: float) -> dict[str, Any]:
    mean = (lambda f: round(statistics.mean(f(r) for r in runs), 4))
    rec = [x for r in runs for x in (r.recoveries or [])]
    return {"loss_realized": mean(lambda r: r.lost / r.sent), "shown_fraction": mean(lambda r: r.shown / r.sent), "restored_per_100": mean(lambda r: 100 * r.restored / r.sent),
            "keyframes_per_100": mean(lambda r: 100 * r.keyframes / r.sent), "gaps_per_100": mean(lambda r: 100 * r.gaps / r.sent),
            "recovery_median_ms": round(statistics.median(rec) * 1000 / fps, 1) if rec else None,
            "message_kbps": mean(lambda r: r.message_bytes * 8 * fps / r.sent / 1000),
            "wire_kbps": mean(lambda r: r.wire * 8 * fps / r.sent / 1000), "frames": frames, "seeds": len(runs)}


def clip_latents(model_path: Path, clip: Path, frames: int) -> tuple[np.ndarray, float]:
    """W+ of the clip's first ``frames`` aligned faces (the face model's E), and the clip's frame rate."""
    from sganc_stream.latent.codec import StreamParams as Params
    from sganc_stream.pipeline import FrameEncoder, load_face_model
    from sganc_stream.video import VideoReader

    model = load_face_model(model_path)
    enc = FrameEncoder(model, Params(), align=True)
    out = []
    with VideoReader(clip) as reader, tqdm(total=frames, desc="E on the clip", unit="frame") as bar:
        fps = reader.fps
        for frame in reader:
            e = enc.encode(frame)
            if e is not None:
                out.append(e.wplus)
                bar.update()
            if len(out) == frames:
                break
    return np.stack(out), fps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="face model bundle (default: the embedded default face model)")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="held-out clip whose faces are coded")
    p.add_argument("--latents", type=Path, help="a (frames, rows, width) .npy to code instead of the clip's W+")
    p.add_argument("--frames", type=int, default=150, help="latent frames taken from the clip (looped to --length)")
    p.add_argument("--length", type=int, default=600, help="frames per simulated call")
    p.add_argument("--fps", type=float, help="frame rate (default: the clip's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rtt-ms", type=float, default=100.0, help="keyframe request round trip (default 100 ms)")
    p.add_argument("--g", type=int, default=10)
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated subset of {', '.join(POLICIES)}")
    p.add_argument("--channels", default=",".join(CHANNELS), help=f"comma-separated subset of {', '.join(CHANNELS)}")
    p.add_argument("--out", default="call_redundancy", help="results name under benchmarks/results/")
    args = p.parse_args()
    from sganc_stream.assets import default_face_model
    from sganc_stream.pipeline import load_face_model

    model_path = args.model or default_face_model()
    if args.latents is not None:
        latents, fps = np.load(args.latents, allow_pickle=False), args.fps or 25.0
    else:
        latents, fps = clip_latents(model_path, args.clip, args.frames)
        fps = args.fps or fps
    codec = load_face_model(model_path).codec
    looped = np.concatenate([latents, latents[::-1]] * math.ceil(args.length / (2 * len(latents))))[:args.length]
    params = StreamParams("open", args.g, len(codec.steps) // 2)
    results: dict[str, Any] = {}
    policies, channels = args.policies.split(","), args.channels.split(",")
    unknown = sorted(set(policies) - set(POLICIES) | set(channels) - set(CHANNELS))
    if unknown or "none" not in policies:
        raise SystemExit(f"call_redundancy: unknown policy or channel {unknown}, or no 'none' to compare with")
    jobs = [(c, pol) for c in channels for pol in policies]
    for channel, policy in tqdm(jobs, desc="configurations"):
        loss, burst = CHANNELS[channel]
        depth, fit = POLICIES[policy]
        runs = [simulate(codec, looped, params, fps, depth=depth, fit=fit, loss=loss, burst=burst, seed=s,
                         rtt_ms=args.rtt_ms) for s in range(args.seeds)]
        results.setdefault(channel, {})[policy] = summarize(runs, len(looped), fps)
    for channel, by_policy in results.items():
        base = by_policy["none"]["wire_kbps"]
        for r in by_policy.values():
            r["wire_vs_none"] = round(r["wire_kbps"] / base, 3)
    path = write_result(args.out, {
        "model": str(model_path), "model_id": codec.model_id, "source": str(args.latents or args.clip),
        "latent_frames": len(latents), "fps": fps, "params": {"mode": params.mode, "g": params.g,
                                                              "step": codec.steps[params.step_index]},
        "rtt_ms": args.rtt_ms, "channels": {k: {"loss": CHANNELS[k][0], "burst": CHANNELS[k][1]} for k in channels},
        "policies": {k: {"depth": POLICIES[k][0], "fit_in_chunks": POLICIES[k][1]} for k in policies},
        "results": results})
    print(json.dumps(results, indent=1))
    print(f"call_redundancy: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
