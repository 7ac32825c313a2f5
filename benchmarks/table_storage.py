"""Codec part of a bundle: stored size (flow weights, frozen tables) raw and packed, and the bits it codes.

    python benchmarks/table_storage.py [--model M] [--clips FILE_OR_DIR ...] [--frames 100]

Writes the bundle twice into temporary files, raw (format v1, as before packing) and packed (``Bundle.save``: codec
tensors byte-shuffled + zlib, format v2), checks that every tensor and the model id are the same in both, and codes
the held-out clips' W+ (MEAD M030, never seen in training; aligned and encoded as transcode does) with both: open
loop, g = 10, middle Δ. The packing is lossless, so the payloads must be byte-identical.
Writes benchmarks/results/table_storage.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from bitrate_vs_g import HEADLINE_G, clip_name_and_identity, find_clips, load_clip, manifest_hints
from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.bundle import bundle_info, load_bundle
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import encode_sequence
from sganc_stream.pipeline import load_face_model


def codec_sizes(path: Path) -> dict[str, int]:
    """Stored and in-memory bytes of the codec part of a bundle file, split into flow weights and tables."""
    info = bundle_info(path)
    out = {"file_bytes": info["file_bytes"], "codec_stored_bytes": info["parts"]["codec"]["stored_bytes"],
           "codec_bytes": info["parts"]["codec"]["bytes"], "flow_stored_bytes": 0, "table_stored_bytes": 0}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if name.startswith("codec."):
                t = f.get_tensor(name)
                out["flow_stored_bytes" if name.startswith("codec.flow.") else "table_stored_bytes"] += t.numel() * t.element_size()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle (default: the shipped face model)")
    ap.add_argument("--clips", nargs="*", default=None, help="held-out clips (default: the MEAD M030 clips of ../shared)")
    ap.add_argument("--frames", type=int, default=100, help="frames per clip")
    ap.add_argument("--max-clips", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = Path(args.model or default_face_model())
    with tempfile.TemporaryDirectory() as tmp:
        raw, packed = Path(tmp) / "raw.safetensors", Path(tmp) / "packed.safetensors"
        load_bundle(src).save(raw, packed=False)
        load_bundle(src).save(packed)
        original, repacked = load_bundle(raw), load_bundle(packed)
        identical = (set(repacked.tensors) == set(original.tensors) and repacked.model_id == original.model_id
                     and all(torch.equal(t, repacked.tensors[k]) and t.dtype == repacked.tensors[k].dtype
                             for k, t in original.tensors.items()))
        before, after = codec_sizes(raw), codec_sizes(packed)
        codec_raw, codec_packed = load_latent_codec(raw), load_latent_codec(packed)
        face = load_face_model(src)
        hints, proxies, rows = manifest_hints(), {}, []
        params = StreamParams("open", HEADLINE_G, len(codec_raw.steps) // 2)
        for path in find_clips(args.clips)[: args.max_clips]:
            clip = load_clip(face, path, args.frames, *clip_name_and_identity(path, hints), proxies)
            a, b = encode_sequence(codec_raw, clip.wplus, params), encode_sequence(codec_packed, clip.wplus, params)
            rows.append({"clip": clip.name, "frames": len(clip.wplus), "bits_per_frame_raw": 8 * len(a.data) / len(clip.wplus),
                         "bits_per_frame_packed": 8 * len(b.data) / len(clip.wplus), "payloads_identical": a.data == b.data})
    result = {"model": str(src), "model_id": original.model_id, "tensors_and_id_identical": identical,
              "raw": before, "packed": after, "g": HEADLINE_G, "step": codec_raw.steps[params.step_index], "clips": rows}
    out = write_result("table_storage", result)
    mb = 1e6
    print(f"model {original.model_id[:12]}…; results in {out}\n")
    print("| | file | codec part stored | flow weights stored | tables stored | codec part in memory |\n|---|---|---|---|---|---|")
    for label, s in (("raw (format v1)", before), ("packed (format v2)", after)):
        print(f"| {label} | {s['file_bytes'] / mb:.2f} MB | {s['codec_stored_bytes'] / mb:.2f} MB | "
              f"{s['flow_stored_bytes'] / mb:.2f} MB | {s['table_stored_bytes'] / mb:.2f} MB | {s['codec_bytes'] / mb:.2f} MB |")
    print(f"\ntensors and model id identical: {identical}")
    for r in rows:
        print(f"{r['clip']}: {r['frames']} frames, open g={HEADLINE_G}: {r['bits_per_frame_raw']:.0f} → "
              f"{r['bits_per_frame_packed']:.0f} bits/frame, payloads identical: {r['payloads_identical']}")
    return 0 if identical and rows and all(r["payloads_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
