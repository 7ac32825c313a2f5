"""What is exact across float code paths and what is not: the figures behind the conformance tolerance (SPEC §7).

    python3 benchmarks/float_agreement.py [--frames 12]

Every setting runs in its own process, since MKL and ATen choose their instruction set when they load:
default; MKL_ENABLE_INSTRUCTIONS=SSE4_2 and =AVX2 (as an older CPU; on AMD CPUs MKL takes its generic path
whatever this says); ATEN_CPU_CAPABILITY=default and =avx2 (torch's own vectorized kernels); MKL_CBWR=COMPATIBLE;
torch with 2 threads instead of 1. In each, for the conformance vectors (bitstream_spec/vectors, made on another
run) and for streams of the shipped 18×512 synthetic codec:

* the integer decoder states: must equal the vectors' everywhere (they are what is exact);
* T⁻¹'s float32 output against the vectors' (and, for the 18×512 codec, decoding the default setting's streams
  against the default's output): the largest |Δ| and the largest |Δ| / (1 + |x|);
* the encoder: whether re-encoding reproduces the vectors' bytes, the 18×512 streams' and the face encoder's
  (a generated clip through E → T → quantizer, shipped face model) bytes of the default setting.

Also the independent numpy reference decoder (bitstream_spec/reference_decoder.py: OpenBLAS, its own order of
sums) against the library. Writes benchmarks/results/float_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "bitstream_spec" / "vectors"
SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "MKL_ENABLE_INSTRUCTIONS=SSE4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "torch threads 2": {"SGANC_BENCH_THREADS": "2"},
}


def child(out: Path, frames: int, streams: Path) -> None:
    """One setting: decode and re-encode everything, save arrays and bytes to ``out`` (npz).

    The 18×512 streams this setting decodes are the default setting's (``streams``, written by the first child),
    so their float gap is T⁻¹'s alone; the ones it encodes are compared byte for byte with the default's."""
    import torch

    from sganc_stream.assets import default_face_model, default_latent_codec
    from sganc_stream.bitstream.container import decode_container
    from sganc_stream.demo import render_clip, talking_face_latents
    from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
    from sganc_stream.latent.model import load_latent_codec
    from sganc_stream.latent.sequence import encode_sequence, stream_params
    from sganc_stream.latent.synthetic import synthetic_latents
    from sganc_stream.pipeline import TranscodeOptions, load_face_model, nominal_times, transcode_frames

    torch.set_num_threads(int(os.environ.get("SGANC_BENCH_THREADS", "1")))
    saved: dict[str, Any] = {"capability": np.array(torch.backends.cpu.get_cpu_capability())}

    def decode(model, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        dec = LatentStreamDecoder(model, stream_params(model, decode_container(data).header))
        out, states = [], []
        for p in decode_container(data).packets:
            out.append(dec.decode(p.type, p.payload))
            states.append(dec.state)
        return np.array(states, np.int64), np.array(out, np.float32)

    vec_model = load_latent_codec(VECTORS / "model.safetensors")
    for path in sorted(VECTORS.glob("*.sgnc")):
        case = path.name[: -len(".sgnc")]
        data = path.read_bytes()
        saved[f"vec/{case}/states"], saved[f"vec/{case}/decoded"] = decode(vec_model, data)
        params = stream_params(vec_model, decode_container(data).header)
        again = encode_sequence(vec_model, np.load(VECTORS / f"{case}.input.npy"), params, fps=25.0).data
        saved[f"vec/{case}/bytes"] = np.frombuffer(again, np.uint8)
    big = load_latent_codec(default_latent_codec())
    for kind, seed in (("smooth", 7), ("walk", 8)):
        res = encode_sequence(big, synthetic_latents(kind, frames, big.rows, big.width, seed=seed),
                              StreamParams("open", 4, 1))
        saved[f"big/{kind}/bytes"] = np.frombuffer(res.data, np.uint8)
        stream = streams / f"{kind}.sgnc"
        if not stream.exists():
            stream.write_bytes(res.data)
        saved[f"big/{kind}/states"], saved[f"big/{kind}/decoded"] = decode(big, stream.read_bytes())
    face = load_face_model(default_face_model())
    clip = render_clip(face, talking_face_latents(face, frames, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        sgnc = Path(tmp) / "clip.sgnc"
        transcode_frames(face, nominal_times(clip, 25.0), 25.0, sgnc,
                         TranscodeOptions(params=StreamParams("open", 10, 1), align=False, progress=False))
        saved["face/bytes"] = np.frombuffer(sgnc.read_bytes(), np.uint8)
    np.savez(out, **saved)


def float_gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(d.max()), "max_rel": float((d / (1.0 + np.abs(b))).max())}


def reference_decoder_gap(streams: Path, library_states: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numpy reference decoder against the library, on every vector and the 18×512 streams (``library_states``:
    the library's states for those): states and floats."""
    sys.path.insert(0, str(ROOT / "bitstream_spec"))
    import reference_decoder

    from sganc_stream.assets import default_latent_codec
    from sganc_stream.latent.model import load_latent_codec
    from sganc_stream.latent.sequence import decode_bytes

    out: dict[str, Any] = {}
    for model_path, files in ((VECTORS / "model.safetensors", sorted(VECTORS.glob("*.sgnc"))),
                              (Path(default_latent_codec()), sorted(streams.glob("*.sgnc")))):
        ref_model, lib_model = reference_decoder.Model(str(model_path)), load_latent_codec(model_path)
        for path in files:
            case = path.name[: -len(".sgnc")]
            states, decoded = reference_decoder.decode_file(ref_model, path.read_bytes())
            vector = VECTORS / f"{case}.states.npy"
            expected = np.load(vector) if vector.exists() else library_states[case]
            key = case if vector.exists() else f"18x512/{case}"
            out[key] = {"states_equal": bool(np.array_equal(states, expected)),
                        **float_gap(decoded, decode_bytes(lib_model, path.read_bytes()))}
    return out


def run(frames: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in SETTINGS.items():  # the default first: its streams are what the others decode
            out = Path(tmp) / "out.npz"
            cmd = [sys.executable, __file__, "--child", str(out), "--frames", str(frames), "--streams", tmp]
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": env.get("SGANC_BENCH_THREADS", "1"),
                                                 "MKL_NUM_THREADS": env.get("SGANC_BENCH_THREADS", "1"), **env})
            with np.load(out) as z:
                arrays[name] = {k: z[k] for k in z.files}
        reference = reference_decoder_gap(Path(tmp), {k: arrays["default"][f"big/{k}/states"]
                                                      for k in ("smooth", "walk")})
    base = arrays["default"]
    for name, got in arrays.items():
        cases = sorted({k.split("/")[1] for k in got if k.startswith("vec/")})
        vec = {c: {"states_equal": bool(np.array_equal(got[f"vec/{c}/states"], np.load(VECTORS / f"{c}.states.npy"))),
                   "reencode_bytes_equal": got[f"vec/{c}/bytes"].tobytes() == (VECTORS / f"{c}.sgnc").read_bytes(),
                   **float_gap(got[f"vec/{c}/decoded"], np.load(VECTORS / f"{c}.decoded.npy"))} for c in cases}
        big = {k: {"encoder_bytes_equal_default": bool(np.array_equal(got[f"big/{k}/bytes"], base[f"big/{k}/bytes"])),
                   "decoded_states_equal_default": bool(np.array_equal(got[f"big/{k}/states"],
                                                                       base[f"big/{k}/states"])),
                   **float_gap(got[f"big/{k}/decoded"], base[f"big/{k}/decoded"])} for k in ("smooth", "walk")}
        results[name] = {"cpu_capability": str(got["capability"]), "vectors": vec, "codec_18x512": big,
                         "face_encoder_bytes_equal_default": bool(np.array_equal(got["face/bytes"], base["face/bytes"]))}
    worst = max(v["max_rel"] for r in results.values() for v in [*r["vectors"].values(), *r["codec_18x512"].values()])
    worst_ref = max(v["max_rel"] for v in reference.values())
    return {"frames": frames, "settings": results, "reference_decoder_vs_library": reference,
            "summary": {"states_always_equal": all(v["states_equal"] for r in results.values() for v in r["vectors"].values())
                        and all(v["decoded_states_equal_default"] for r in results.values()
                                for v in r["codec_18x512"].values())
                        and all(v["states_equal"] for v in reference.values()),
                        "encoder_bytes_differ_in": sorted(n for n, r in results.items() if not r["face_encoder_bytes_equal_default"]
                                                          or not all(v["encoder_bytes_equal_default"] for v in r["codec_18x512"].values())),
                        "worst_rel_gap_across_settings": worst, "worst_rel_gap_reference_decoder": worst_ref}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="frames of each 18×512 stream and of the face clip")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--streams", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.frames, args.streams)
        return 0
    result = run(args.frames)
    path = write_result("float_agreement", result)
    print(json.dumps(result["summary"], indent=1))
    for name, r in result["settings"].items():
        rel = max(v["max_rel"] for v in [*r["vectors"].values(), *r["codec_18x512"].values()])
        states = all(v["states_equal"] for v in r["vectors"].values()) and all(
            v["decoded_states_equal_default"] for v in r["codec_18x512"].values())
        big_bytes = all(v["encoder_bytes_equal_default"] for v in r["codec_18x512"].values())
        print(f"{name:32s} {r['cpu_capability']:8s} states equal: {states}, T⁻¹ largest |Δ|/(1+|x|) {rel:.2e}; "
              f"encoder bytes equal: vectors {all(v['reencode_bytes_equal'] for v in r['vectors'].values())}, "
              f"18×512 {big_bytes}, face {r['face_encoder_bytes_equal_default']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
