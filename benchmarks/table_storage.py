"""Codec part of a bundle: stored size (flow weights, frozen tables) raw, packed and compact, and the bits it codes.

    python benchmarks/table_storage.py [--model M] [--clips FILE_OR_DIR ...] [--frames 100] [--max-clips 2] \
        [--write-compact OUT.safetensors]

Writes the bundle three times into temporary files: raw (format v1, as before packing), packed (``Bundle.save``: codec
tensors byte-shuffled + zlib, format v2) and compact (the flow weights snapped to the 8-bit grid of
``sganc_stream.bundle.snap_to_grid8`` and stored grid8-packed, format v3; a new model). Checks that every tensor and
the model id are the same in raw and packed and that the compact file loads exactly the snapped weights, then codes the
held-out clips' W+ (MEAD M030, never seen in training; aligned and encoded as transcode does) with each: open loop,
g = 10, every step preset. Packing is lossless, so those payloads must be byte-identical; the compact model's T differs,
so its bits and latent MSE (decoded W+ against the encoder's W+) are compared with the original's.
``--write-compact`` keeps the compact bundle (the tool that makes one). Writes benchmarks/results/table_storage.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from bitrate_vs_g import HEADLINE_G, clip_name_and_identity, find_clips, load_clip, manifest_hints
from common import write_result
from sganc_stream.assets import default_face_model
from sganc_stream.bundle import Bundle, bundle_info, load_bundle, snap_to_grid8
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import decode_bytes, encode_sequence
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


def compact(bundle: Bundle) -> Bundle:
    """The bundle with its flow weights snapped to the grid8 grid (lossy; tables and other parts unchanged)."""
    return Bundle({k: snap_to_grid8(v) if k.startswith("codec.flow.") else v for k, v in bundle.tensors.items()},
                  dict(bundle.config))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle (default: the shipped face model)")
    ap.add_argument("--clips", nargs="*", default=None, help="held-out clips (default: the MEAD M030 clips of ../shared)")
    ap.add_argument("--frames", type=int, default=100, help="frames per clip")
    ap.add_argument("--max-clips", type=int, default=2)
    ap.add_argument("--write-compact", type=Path, default=None, help="also keep the compact bundle here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = Path(args.model or default_face_model())
    with tempfile.TemporaryDirectory() as tmp:
        raw, packed, small = (Path(tmp) / f"{n}.safetensors" for n in ("raw", "packed", "compact"))
        load_bundle(src).save(raw, packed=False)
        load_bundle(src).save(packed)
        snapped = compact(load_bundle(src))
        snapped.save(small)
        original, repacked, reloaded = load_bundle(raw), load_bundle(packed), load_bundle(small)
        identical = (set(repacked.tensors) == set(original.tensors) and repacked.model_id == original.model_id
                     and all(torch.equal(t, repacked.tensors[k]) and t.dtype == repacked.tensors[k].dtype
                             for k, t in original.tensors.items()))
        compact_exact = (reloaded.model_id == snapped.model_id and reloaded.config["codec"] == original.config["codec"]
                         and all(torch.equal(t, reloaded.tensors[k]) for k, t in snapped.tensors.items()))
        flows = [(k, t.float()) for k, t in original.tensors.items() if k.startswith("codec.flow.")]
        weight_rms = float(np.sqrt(sum(float(((snapped.tensors[k].float() - t) ** 2).sum()) for k, t in flows)
                                   / sum(float((t ** 2).sum()) for _, t in flows)))
        sizes = {"raw": codec_sizes(raw), "packed": codec_sizes(packed), "compact": codec_sizes(small)}
        if args.write_compact:
            snapped.save(args.write_compact)
        codec_raw, codec_packed, codec_small = load_latent_codec(raw), load_latent_codec(packed), load_latent_codec(small)
        face = load_face_model(src)
        hints, proxies, rows = manifest_hints(), {}, []
        for path in find_clips(args.clips)[: args.max_clips]:
            clip = load_clip(face, path, args.frames, *clip_name_and_identity(path, hints), proxies)
            n = len(clip.wplus)
            for si, step in enumerate(codec_raw.steps):
                params = StreamParams("open", HEADLINE_G, si)
                a, b, c = (encode_sequence(m, clip.wplus, params) for m in (codec_raw, codec_packed, codec_small))
                mse_a = float(np.mean((decode_bytes(codec_raw, a.data) - clip.wplus) ** 2))
                mse_c = float(np.mean((decode_bytes(codec_small, c.data) - clip.wplus) ** 2))
                rows.append({"clip": clip.name, "frames": n, "step": step, "bits_per_frame_raw": 8 * len(a.data) / n,
                             "bits_per_frame_packed": 8 * len(b.data) / n, "payloads_identical": a.data == b.data,
                             "bits_per_frame_compact": 8 * len(c.data) / n, "latent_mse": mse_a,
                             "latent_mse_compact": mse_c})
    totals = {}
    for si, step in enumerate(codec_raw.steps):
        r = [x for x in rows if x["step"] == step]
        bits = sum(x["bits_per_frame_raw"] * x["frames"] for x in r)
        bits_c = sum(x["bits_per_frame_compact"] * x["frames"] for x in r)
        mse = sum(x["latent_mse"] * x["frames"] for x in r)
        mse_c = sum(x["latent_mse_compact"] * x["frames"] for x in r)
        totals[str(step)] = {"bits_change_pct": 100 * (bits_c / bits - 1), "latent_mse_change_pct": 100 * (mse_c / mse - 1)}
    result = {"model": str(src), "model_id": original.model_id, "compact_model_id": snapped.model_id,
              "tensors_and_id_identical": identical, "compact_loads_exactly": compact_exact,
              "flow_weight_rms_relative_change": weight_rms, **sizes, "g": HEADLINE_G, "clips": rows,
              "compact_vs_original_by_step": totals}
    out = write_result("table_storage", result)
    mb = 1e6
    print(f"model {original.model_id[:12]}…, compact model {snapped.model_id[:12]}…; results in {out}\n")
    print("| | file | codec part stored | flow weights stored | tables stored | codec part in memory |\n|---|---|---|---|---|---|")
    for label, key in (("raw (format v1)", "raw"), ("packed (format v2)", "packed"), ("compact (format v3)", "compact")):
        s = sizes[key]
        print(f"| {label} | {s['file_bytes'] / mb:.2f} MB | {s['codec_stored_bytes'] / mb:.2f} MB | "
              f"{s['flow_stored_bytes'] / mb:.2f} MB | {s['table_stored_bytes'] / mb:.2f} MB | {s['codec_bytes'] / mb:.2f} MB |")
    print(f"\nraw/packed tensors and model id identical: {identical}; compact loads its snapped weights exactly: "
          f"{compact_exact}; flow weights' relative RMS change {weight_rms:.2e}\n")
    print("| clip | step | bits/frame original | compact | latent MSE original | compact | packed payloads identical |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['step']:g} | {r['bits_per_frame_raw']:.0f} | {r['bits_per_frame_compact']:.0f} | "
              f"{r['latent_mse']:.3e} | {r['latent_mse_compact']:.3e} | {r['payloads_identical']} |")
    for step, t in totals.items():
        print(f"step {step}: compact vs original, bits {t['bits_change_pct']:+.2f} %, latent MSE {t['latent_mse_change_pct']:+.2f} %")
    ok = identical and compact_exact and rows and all(r["payloads_identical"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
