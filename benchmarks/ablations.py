"""Ablations for the bitrate-versus-g benchmark: what each part of the learned latent coding buys.

* stage-specific vs single model, and flow T vs identity (no T): latent codecs trained here, with identical
  settings, on W+ sequences of *training* identities only, then coded open-loop on the evaluation clips;
  compared as bits per frame at equal latent MSE.
* Irwin–Hall residual tables vs the empirical distribution: residual symbols of the model's open-loop encodes,
  ideal bits under the Irwin–Hall table against a histogram fitted on the training clips' residuals (and the
  evaluation residuals' own entropy, an oracle bound). Ideal bits only: the bitstream is unchanged.
* open-loop vs closed-loop drift comes from the main grid (bitrate_vs_g.py): latent error over time.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rd import empirical_bits, entropy_bits, rate_at_quality
from sganc_stream.bitstream.packet import PacketType
from sganc_stream.entropy.irwin_hall import residual_pmf, residual_table
from sganc_stream.entropy.rans import decode_parts
from sganc_stream.latent.codec import LatentStreamEncoder, StreamParams
from sganc_stream.latent.groups import row_weights, stage_groups
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.training.latent_codec import TrainConfig, train_latent_codec


class CachedProxies:
    """The latent codec with T(w) looked up instead of recomputed: every (mode, g, Δ) of a clip shares T(E(x)).

    The values are those of ``model.to_proxy`` on the same single frames, so the coding is bit-identical.
    """

    def __init__(self, model: LatentCodecModel, cache: dict[bytes, np.ndarray]) -> None:
        self._model, self._cache = model, cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def to_proxy(self, wplus: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(wplus).tobytes(), digest_size=16).digest()
        if key not in self._cache:
            self._cache[key] = self._model.to_proxy(wplus)
        return self._cache[key]


VARIANTS = {  # name → (groups, flow couplings; None = the trainer's default)
    "stage groups + T": ("stage", None),
    "single group + T": ("single", None),
    "stage groups, no T": ("stage", 0),
}


def train_variants(train: list[np.ndarray], steps: int, step_presets: list[float], lam: float,
                   seed: int = 0, progress: bool = True) -> dict[str, LatentCodecModel]:
    """One latent codec per ablation variant, all trained with the same data, steps, λ, Δ presets and seed."""
    models = {}
    with tempfile.TemporaryDirectory(prefix="bvg-ablation-") as tmp:
        for i, (name, (groups, couplings)) in enumerate(VARIANTS.items()):
            cfg = TrainConfig(steps=steps, lam=lam, groups=groups, step_presets=list(step_presets), seed=seed,
                              checkpoint_every=max(steps, 1))
            if couplings is not None:
                cfg.couplings = couplings
            model, _ = train_latent_codec(train, Path(tmp) / f"v{i}.safetensors", cfg, progress=progress)
            models[name] = model
    return models


def code_open_loop(model: LatentCodecModel, latents: np.ndarray, g: int, step_index: int) -> tuple[float, float, float]:
    """(payload bits per frame, latent MSE, stage-weighted latent MSE) of an open-loop encode with period ``g``.

    The weighted MSE uses the stage models' row weights (coarse rows 1, fine rows down to 1/100): what a stage
    model is trained to minimise, whereas a single-group model is trained on the plain MSE."""
    enc = LatentStreamEncoder(model, StreamParams("open", g, step_index))
    rw = row_weights(model.rows, stage_groups(model.rows))[:, None]
    bits, sq, wsq = 0, 0.0, 0.0
    for w in latents:
        coded = enc.encode(w)
        bits += 8 * len(coded.payload)
        e = (coded.recon.astype(np.float64) - w) ** 2
        sq += float(e.sum())
        wsq += float((e * rw).sum())
    return bits / len(latents), sq / latents.size, wsq / latents.size


def compare_variants(models: dict[str, LatentCodecModel], evals: list[np.ndarray], g: int,
                     progress: bool = True) -> dict:
    """Rate and latent MSE per variant and Δ on the evaluation clips; against the reference (first) variant:
    bits and MSE ratios at the same Δ, and bits at equal latent MSE (the reference's bits interpolated at this
    row's MSE; None with the reason where the reference curve does not reach it)."""
    rows = []
    total = sum(len(m.steps) for m in models.values()) * len(evals)
    models = {name: CachedProxies(m, {}) for name, m in models.items()}  # type: ignore[misc]
    with tqdm(total=total, desc="ablation codecs", unit="encode", mininterval=1.0, disable=not progress) as bar:
        for name, model in models.items():
            for si, step in enumerate(model.steps):
                bits, sq, wsq, n = 0.0, 0.0, 0.0, 0
                for lat in evals:
                    b, mse, wmse = code_open_loop(model, lat, g, si)
                    bits += b * len(lat)
                    sq += mse * lat.size
                    wsq += wmse * lat.size
                    n += len(lat)
                    bar.update()
                size = sum(x.size for x in evals)
                rows.append({"variant": name, "g": g, "step": step, "bits_per_frame": bits / n,
                             "latent_mse": sq / size, "weighted_latent_mse": wsq / size})
    reference = next(iter(models))
    curves = {v: [(r["bits_per_frame"], r["latent_mse"]) for r in rows if r["variant"] == v] for v in models}
    weighted = {v: [(r["bits_per_frame"], r["weighted_latent_mse"]) for r in rows if r["variant"] == v] for v in models}
    same_step = {(r["variant"], r["step"]): r for r in rows}
    for r in rows:
        if r["variant"] == reference:
            continue
        ref = same_step[(reference, r["step"])]
        r["bits_vs_reference_same_step"] = r["bits_per_frame"] / ref["bits_per_frame"]
        r["mse_vs_reference_same_step"] = r["latent_mse"] / ref["latent_mse"]
        ref_bits, status = rate_at_quality(curves[reference], r["latent_mse"])
        r["reference_bits_at_same_mse"] = ref_bits
        r["bits_vs_reference"] = None if ref_bits is None else r["bits_per_frame"] / ref_bits
        r["status"] = status
        ref_bits, status = rate_at_quality(weighted[reference], r["weighted_latent_mse"])
        r["bits_vs_reference_weighted"] = None if ref_bits is None else r["bits_per_frame"] / ref_bits
        r["status_weighted"] = status
    return {"reference": reference, "rows": rows}


def residual_symbols(model: LatentCodecModel, latents: np.ndarray, g: int, step_index: int) -> np.ndarray:
    """Every residual symbol of an open-loop encode (decoded back from the packets), flattened."""
    enc = LatentStreamEncoder(model, StreamParams("open", g, step_index))
    c = model.channels
    diff, res = model.tables["diff"][step_index], residual_table(g)
    out = []
    for w in latents:
        coded = enc.encode(w)
        if coded.type == PacketType.INTER_RESIDUAL:
            _, r = decode_parts(coded.payload, [(diff, c), (res, c)])
            out.append(r)
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def irwin_hall_vs_empirical(model: LatentCodecModel, train: list[np.ndarray], evals: list[np.ndarray],
                            gs: list[int], step_index: int, cache: dict[bytes, np.ndarray] | None = None) -> list[dict]:
    """Ideal residual bits per residual frame: Irwin–Hall table vs a histogram of training residuals vs oracle.

    ``cache``: T(w) values already computed for this model (shared with the main grid)."""
    model = CachedProxies(model, {} if cache is None else cache)  # type: ignore[assignment]
    rows = []
    for g in gs:
        ev = [residual_symbols(model, lat, g, step_index) for lat in evals]
        symbols = np.concatenate(ev)
        if not len(symbols):
            rows.append({"g": g, "residual_frames": 0})
            continue
        fit = np.concatenate([residual_symbols(model, lat, g, step_index) for lat in train] or [np.empty(0, np.int64)])
        offset, probs = residual_pmf(g)
        support = (offset, offset + len(probs) - 2)
        frames = len(symbols) // model.channels
        ih = residual_table(g).ideal_bits(symbols)
        emp = empirical_bits(symbols, fit, support) if len(fit) else None
        n = 3 + (g - 1)
        rows.append({
            "g": g, "step": model.steps[step_index], "residual_frames": frames,
            "irwin_hall_bits_per_residual_frame": ih / frames,
            "empirical_bits_per_residual_frame": None if emp is None else emp / frames,
            "oracle_bits_per_residual_frame": entropy_bits(symbols) / frames,
            "empirical_vs_irwin_hall": None if emp is None else emp / ih - 1,
            "residual_std": float(symbols.std()), "irwin_hall_std": float(np.sqrt(n / 12.0)),
            "zero_fraction": float(np.mean(symbols == 0)),
        })
    return rows
