"""Regenerate the conformance vectors in bitstream_spec/vectors/ (see SPEC.md §7).

    python bitstream_spec/make_vectors.py [--force] [--only PREFIX]

Trains the small vector model once (if absent), then encodes each case. Existing files that would change are
left alone unless --force is given, so a code change that alters the bitstream shows up as a failing test
rather than silently rewritten vectors.

This build writes bitstream v2 (``v2_*`` cases), and v3 for streams coded with a model's empirical residual tables
(``v3_*`` cases, with ``model_empirical.safetensors``: the vector model plus empirical residual tables fitted on its
training sequences, stored packed, bundle format v2), and v4 for rate-controlled streams (``v4_*`` cases: the step
changes between groups of frames; each case's stream uses at least two steps), and v5 for streams with temporal context or
decimation (``v5_*`` cases; temporal context with ``model_context.safetensors``: the vector model plus temporal-context
tables fitted on its training sequences, ``training.latent_codec.fit_context``), and v6 for rate-controlled streams with
either (``v6_*`` cases, each switching steps). The version 1 vectors (the other cases) were made by the v1
encoder (commit c6daa32) and are kept frozen: they check that v1 streams still decode.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

from sganc_stream.bitstream.container import decode_container
from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
from sganc_stream.latent.model import load_latent_codec
from sganc_stream.latent.sequence import encode_sequence, interpolate, stream_params
from sganc_stream.latent.synthetic import synthetic_latents
from sganc_stream.training.latent_codec import TrainConfig, fit_context, fit_empirical_residuals, train_latent_codec

HERE = Path(__file__).resolve().parent / "vectors"
ROWS, WIDTH = 6, 32


def cases() -> dict[str, tuple[np.ndarray, StreamParams, tuple[int, ...]]]:
    """name → (latents (all-NaN frames: no face), parameters, frames where a new face starts)."""
    walk = synthetic_latents("walk", 24, ROWS, WIDTH, seed=101)
    smooth = synthetic_latents("smooth", 16, ROWS, WIDTH, seed=102)
    jumpy = walk.copy()
    jumpy[9] += 6.0  # a jump far outside the difference table: exercises escapes
    gaps = synthetic_latents("smooth", 24, ROWS, WIDTH, seed=103)
    gaps[:5] = np.nan  # five frames before the first face (the start offset)
    gaps[11:15] = np.nan  # the face leaves for four frames and comes back
    other = synthetic_latents("walk", 10, ROWS, WIDTH, seed=104) + 1.5  # another person
    switch = np.concatenate([walk[:8], np.full((2, ROWS, WIDTH), np.nan, np.float32), other, walk[8:12]])
    repeats = jumpy[[0, 1, 2, 2, 3, 4, 5, 6, 6, 6, 7, 8, 9, 10, 11, 12, 12, 13, 14, 15, 16, 17, 18, 19]]  # repeated frames
    long_walk = synthetic_latents("walk", 60, ROWS, WIDTH, seed=105)
    long_walk[30:] *= 0.5  # calmer second half: the controller moves to a finer step
    long_gaps = synthetic_latents("walk", 48, ROWS, WIDTH, seed=106)
    long_gaps[20:24] = np.nan
    long_repeats = long_walk[np.repeat(np.arange(60), [2 if k % 7 == 3 else 1 for k in range(60)])]  # some twice
    long_switch = np.concatenate([synthetic_latents("walk", 12, ROWS, WIDTH, seed=107),
                                  synthetic_latents("smooth", 36, ROWS, WIDTH, seed=108) + 1.0])
    return {
        "v2_open_g4_step0.5": (walk, StreamParams("open", 4, 1), ()),
        "v2_open_never_step1": (smooth, StreamParams("open", 0, 2), ()),
        "v2_closed_step0.25": (smooth, StreamParams("closed", 0, 0), ()),
        "v2_intra_step0.5": (smooth[:6], StreamParams("intra", 0, 1), ()),
        "v2_open_g3_keyint8_escapes": (jumpy, StreamParams("open", 3, 1, keyframe_interval=8), ()),
        "v2_no_face_lead_in_and_gap": (gaps, StreamParams("open", 4, 1), ()),
        "v2_new_face_after_no_face": (switch, StreamParams("closed", 0, 1), (10, 20)),
        "v3_open_g2_empirical_step0.5": (jumpy, StreamParams("open", 2, 1, residual="empirical"), ()),
        "v3_open_g5_empirical_no_face_gap": (gaps, StreamParams("open", 5, 0, residual="empirical"), ()),
        "v4_open_g4_rate17": (long_walk, StreamParams("open", 4, 0, target_kbps=17.0), ()),
        "v4_closed_keyint12_rate15_no_face": (long_gaps, StreamParams("closed", 0, 0, 12, target_kbps=15.0), ()),
        "v4_open_g2_empirical_rate14_new_face": (long_switch, StreamParams("open", 2, 0, residual="empirical",
                                                                          target_kbps=14.0), (12,)),
        "v5_open_g4_temporal_escapes_repeats": (repeats, StreamParams("open", 4, 1, inter_context="temporal"), ()),
        "v5_closed_keyint8_temporal_no_face": (gaps, StreamParams("closed", 0, 0, 8, inter_context="temporal"), ()),
        "v5_open_g3_temporal_decimation3_new_face": (switch, StreamParams("open", 3, 1, inter_context="temporal",
                                                                          decimation=3), (10, 20)),
        "v5_closed_decimation2_no_face": (gaps, StreamParams("closed", 0, 0, decimation=2), ()),
        "v6_open_g4_temporal_rate14_repeats": (long_repeats, StreamParams("open", 4, 0, inter_context="temporal",
                                                                          target_kbps=14.0), ()),
        "v6_closed_keyint12_temporal_decimation2_rate8_no_face": (long_gaps, StreamParams(
            "closed", 0, 0, 12, target_kbps=8.0, inter_context="temporal", decimation=2), ()),
    }


def model_file(case: str) -> str:
    """The model a case is coded with."""
    if "temporal" in case:
        return "model_context.safetensors"
    return "model_empirical.safetensors" if "empirical" in case else "model.safetensors"


def training_sequences() -> list[np.ndarray]:
    """What the vector model was trained on (and its empirical residual tables fitted on)."""
    return [synthetic_latents(k, 40, ROWS, WIDTH, seed=i) for i, k in enumerate(["smooth", "walk"] * 3)]


def decode_states(model, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(states after each face packet (faces, C) int64, decoded W+ (frames, rows, width), NaN where no face)."""
    c = decode_container(data)
    dec = LatentStreamDecoder(model, stream_params(model, c.header), c.header.version)
    out, states = [], []
    for p in c.packets:
        if p.type.is_frame:
            out.append(dec.decode(p.type, p.payload))
            states.append(dec.state)
        else:
            out.append(np.full((ROWS, WIDTH), np.nan, np.float32))
    decoded = interpolate(np.array(out, dtype=np.float32).reshape(len(out), ROWS, WIDTH),
                          [p.type.is_intra for p in c.packets], c.header.decimation)[0]
    return np.array(states, dtype=np.int64).reshape(len(states), ROWS * WIDTH), decoded


def write(path: Path, data: bytes, force: bool) -> None:
    if path.exists() and path.read_bytes() != data and not force:
        sys.exit(f"{path} would change; rerun with --force if the bitstream change is intended")
    path.write_bytes(data)


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--only", default="", metavar="PREFIX",
                    help="write only the cases whose name starts with PREFIX (e.g. v5_: the others' float32 decoded "
                         "frames differ in the last bits on another machine, within SPEC §7's tolerance)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    HERE.mkdir(exist_ok=True)
    model_path = HERE / "model.safetensors"
    if not model_path.exists():
        train_latent_codec(training_sequences(), model_path, TrainConfig(steps=60, batch=8, hidden=16, step_presets=[0.25, 0.5, 1.0]),
                           progress=False)
        model_path.with_name(model_path.name + ".ckpt").unlink()
    empirical_path = HERE / "model_empirical.safetensors"
    if not empirical_path.exists():
        base = load_latent_codec(model_path)
        base.empirical_residuals = fit_empirical_residuals(base, training_sequences())
        base.save(empirical_path)
    context_path = HERE / "model_context.safetensors"
    if not context_path.exists():
        base = load_latent_codec(model_path)
        base.context_tables = fit_context(base, training_sequences(), classes=2)
        base.save(context_path)
    models = {f: load_latent_codec(HERE / f) for f in ("model.safetensors", empirical_path.name, context_path.name)}
    for name, (latents, params, new_faces) in cases().items():
        if not name.startswith(args.only):
            continue
        model = models[model_file(name)]
        res = encode_sequence(model, latents, params, fps=25.0, new_faces=new_faces)
        states, decoded = decode_states(model, res.data)
        assert np.array_equal(decoded, res.recon, equal_nan=True)
        assert not params.rate_controlled or len(set(res.step_choices)) >= 2, f"{name}: the step never changes"
        write(HERE / f"{name}.input.npy", npy_bytes(latents), args.force)
        write(HERE / f"{name}.sgnc", res.data, args.force)
        write(HERE / f"{name}.states.npy", npy_bytes(states), args.force)
        write(HERE / f"{name}.decoded.npy", npy_bytes(decoded), args.force)
        print(f"{name}: {len(latents)} frames, {len(res.data)} bytes, types {sorted(set(res.frame_types))}, "
              f"steps {[res.steps[j] for j in res.step_choices]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
