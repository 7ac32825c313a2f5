"""How many altered payloads decode without an error: bitstream v1 (end-of-coder check only) against v2 (check value).

    python benchmarks/payload_alterations.py [--trials 20000] [--seed 0]

A trial alters one payload of a stream (one bit flipped, one byte replaced, one 32-bit word replaced, or a burst of
2-8 random bytes; the container CRC would be recomputed, so only the payload can tell) and decodes that packet with
the library decoder in the state the stream had before it. "Undetected" = it decoded without a BitstreamError.
Streams: the conformance vectors of both versions (same inputs and settings, 6x32 latents) and a v2 stream of the
default face model's latent codec on a talking-face walk made by its own generator. Also the check value's cost:
payload bytes of the v2 vectors against the v1 vectors of the same inputs. Writes
benchmarks/results/payload_alterations.json.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from pathlib import Path

import numpy as np
import torch

from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.bitstream.container import decode_container
from sganc_stream.demo import talking_face_latents
from sganc_stream.errors import BitstreamError
from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
from sganc_stream.latent.model import LatentCodecModel, load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, stream_params
from sganc_stream.pipeline import load_face_model

VECTORS = Path(__file__).resolve().parents[1] / "bitstream_spec" / "vectors"
KINDS = ("bit", "byte", "word", "burst")


def alter(payload: bytes, kind: str, rng: random.Random) -> bytes:
    """One alteration of ``kind`` that changes the payload."""
    while True:
        b = bytearray(payload)
        if kind == "bit":
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == "word":
            i = 4 * rng.randrange(len(b) // 4)
            b[i:i + 4] = rng.randbytes(4)
        else:
            n = rng.randint(2, min(8, len(b)))
            i = rng.randrange(len(b) - n + 1)
            b[i:i + n] = rng.randbytes(n)
        if bytes(b) != payload:
            return bytes(b)


def trial_stream(model: LatentCodecModel, data: bytes, trials: int, rng: random.Random) -> dict[str, object]:
    """Alter random face payloads of one stream ``trials`` times; count the alterations that decode."""
    c = decode_container(data)
    dec = LatentStreamDecoder(model, stream_params(model, c.header), c.header.version)
    before = []  # (decoder as it was before the packet, packet): shallow copies share nothing that decode mutates
    for p in c.packets:
        if p.type.is_frame and p.payload:
            before.append((copy.copy(dec), p))
            dec.decode(p.type, p.payload)
    undetected = {k: 0 for k in KINDS}
    by_check = 0  # decoded to the end of the coder and were caught by the v2 check value alone
    for t in range(trials):
        kind = KINDS[t % len(KINDS)]
        state, p = before[rng.randrange(len(before))]
        try:
            copy.copy(state).decode(p.type, alter(p.payload, kind, rng))
            undetected[kind] += 1
        except BitstreamError as exc:
            by_check += "check value" in str(exc)
    total = sum(undetected.values())
    return {"version": c.header.version, "trials": trials, "undetected": total, "undetected_rate": total / trials,
            "caught_by_check_value_only": by_check, "by_kind": undetected,
            "payload_bytes_mean": float(np.mean([len(p.payload) for _, p in before]))}


def check_value_cost() -> dict[str, float]:
    """Payload bytes of the v2 vectors against the v1 vectors made from the same inputs and settings."""
    v1 = v2 = packets = 0
    for path in sorted(VECTORS.glob("v2_*.sgnc")):
        old = VECTORS / f"{path.stem[3:]}.sgnc"
        if old.exists():
            a, b = decode_container(old.read_bytes()).packets, decode_container(path.read_bytes()).packets
            v1 += sum(len(p.payload) for p in a)
            v2 += sum(len(p.payload) for p in b)
            packets += len(a)
    return {"packets": packets, "v1_payload_bytes": v1, "v2_payload_bytes": v2, "bytes_per_packet": (v2 - v1) / packets}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20000, help="alterations per stream (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    streams: dict[str, dict[str, object]] = {}
    vector_model = load_latent_codec(VECTORS / "model.safetensors")
    for path in sorted(VECTORS.glob("*.sgnc")):
        streams[path.stem] = trial_stream(vector_model, path.read_bytes(), args.trials, rng)
        print(f"{path.stem}: {streams[path.stem]['undetected']} of {args.trials} undetected", file=sys.stderr)
    face = load_face_model(default_face_model())
    latents = talking_face_latents(face, 50, seed=1)
    res = encode_sequence(face.codec, latents, StreamParams("open", 10, len(face.codec.steps) // 2))
    streams["default_model_open_g10"] = trial_stream(face.codec, res.data, args.trials, rng)
    print(f"default model: {streams['default_model_open_g10']['undetected']} of {args.trials} undetected",
          file=sys.stderr)
    summary: dict[str, object] = {"check_value_cost": check_value_cost()}
    for version in (1, 2):
        picked = [s for name, s in streams.items() if s["version"] == version and name != "default_model_open_g10"]
        n, u = sum(s["trials"] for s in picked), sum(s["undetected"] for s in picked)
        summary[f"vectors_v{version}"] = {"streams": len(picked), "trials": n, "undetected": u, "rate": u / n}
    path = write_result("payload_alterations", {"summary": summary, "streams": streams})
    print(f"| stream set | trials | undetected | rate |\n|---|---|---|---|")
    for name, s in summary.items():
        if name.startswith("vectors"):
            print(f"| {name} | {s['trials']} | {s['undetected']} | {s['rate']:.2e} |")
    d = streams["default_model_open_g10"]
    print(f"| default model v2, open g=10 | {d['trials']} | {d['undetected']} | {d['undetected_rate']:.2e} |")
    print(f"default model: {d['caught_by_check_value_only']} of {d['trials']} alterations passed the end-of-coder check "
          "and were caught by the check value alone")
    cost = summary["check_value_cost"]
    print(f"check value cost: {cost['bytes_per_packet']:+.2f} bytes per packet ({cost['packets']} packets of the vectors, "
          f"{cost['v1_payload_bytes']} → {cost['v2_payload_bytes']} payload bytes)")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
