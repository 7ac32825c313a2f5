"""Train the flow T and the factorized entropy models on latent sequences alone, then freeze them.

Loss (the paper's "Lat. D"): rate in bits per latent dimension + λ · row-weighted MSE in W+. On each
9-frame slice the first frame is coded intra and the rest as open-loop differences; quantization is
replaced by additive uniform noise in the proxy space (training step Δ = 1), and the noisy differences
accumulate exactly as the open-loop decoder's drift does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sganc_stream.bitstream.packet import PacketType
from sganc_stream.entropy.factorized import FactorizedDensity
from sganc_stream.entropy.irwin_hall import residual_support
from sganc_stream.entropy.tables import CodingTable, channel_histogram_table, histogram_freqs, rebinned
from sganc_stream.errors import InputError
from sganc_stream.fileio import atomic_output, load_npy
from sganc_stream.latent.codec import LatentStreamEncoder, StreamParams
from sganc_stream.latent.context import CONTEXT_CLASSES, MAX_CLASSES, ContextTables, fit_context_tables
from sganc_stream.latent.flow import NUM_COUPLINGS, RealNVP
from sganc_stream.latent.groups import row_weights, stage_groups
from sganc_stream.latent.model import TABLE_KINDS, LatentCodecModel
from sganc_stream.models.checkpoint import read_torch_file
from sganc_stream.training.latent_files import find_latent_files


@dataclass
class TrainConfig:
    steps: int = 2000
    lam: float = 100.0
    batch: int = 16
    slice_len: int = 9
    lr: float = 1e-3
    aux_lr: float = 1e-2
    groups: str = "stage"  # stage | single
    hidden: int = 64
    couplings: int = NUM_COUPLINGS  # 0 = identity T (ablation)
    step_presets: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    seed: int = 0
    checkpoint_every: int = 200


def load_latent_sequences(paths: Iterable[str | Path]) -> list[np.ndarray]:
    """Read ``.npy`` files (or folders of them) holding (frames, rows, width) arrays of one shape."""
    files = find_latent_files(paths)
    seqs = []
    for f in files:
        a = load_npy(f)
        if a.ndim != 3 or a.shape[0] < 2 or not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"{f}: expected a float (frames >= 2, rows, width) array, got {a.dtype} {a.shape}")
        if seqs and a.shape[1:] != seqs[0].shape[1:]:
            raise InputError(f"{f}: shape {a.shape[1:]} differs from {seqs[0].shape[1:]} of the other files")
        if not np.isfinite(a).all():
            raise InputError(f"{f}: contains NaN or infinity")
        seqs.append(a.astype(np.float32))
    return seqs


class LatentCodecTrainer(nn.Module):
    """Flows and entropy models (intra, difference) per stage group, with the training loss."""

    def __init__(self, rows: int, width: int, cfg: TrainConfig) -> None:
        super().__init__()
        self.rows, self.width, self.cfg = rows, width, cfg
        self.groups = stage_groups(rows, cfg.groups)
        self.flows = nn.ModuleList(RealNVP(width, cfg.hidden, cfg.couplings) for _ in self.groups)
        self.intra = nn.ModuleList(FactorizedDensity((b - a) * width, init_scale=4.0) for a, b in self.groups)
        self.diff = nn.ModuleList(FactorizedDensity((b - a) * width, init_scale=1.0) for a, b in self.groups)
        self.register_buffer("row_w", torch.tensor(row_weights(rows, self.groups), dtype=torch.float32))

    def loss(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """w: (B, T, rows, width) → (loss, bits per frame, weighted MSE per element)."""
        n, t = w.shape[:2]
        bits = w.new_zeros(())
        sq = w.new_zeros(())
        for (a, b), flow, intra, diff in zip(self.groups, self.flows, self.intra, self.diff):
            x = w[:, :, a:b]
            y = flow(x).reshape(n, t, -1)
            y0, bits0 = intra.noisy_bits(y[:, 0])
            d, bitsd = diff.noisy_bits((y[:, 1:] - y[:, :-1]).reshape(n * (t - 1), -1))
            y_hat = torch.cat([y0[:, None], y0[:, None] + torch.cumsum(d.reshape(n, t - 1, -1), 1)], 1)
            x_hat = flow.inverse(y_hat.reshape(x.shape))
            sq = sq + ((x_hat - x) ** 2 * self.row_w[a:b, None]).sum()
            bits = bits + bits0 + bitsd
        dims = n * t * self.rows * self.width
        mse = sq / dims
        return bits / dims + self.cfg.lam * mse, bits / (n * t), mse

    def aux_loss(self) -> torch.Tensor:
        return sum(m.loss() for m in [*self.intra, *self.diff])

    @torch.no_grad()
    def value_ranges(self, seqs: list[np.ndarray], max_frames: int = 4000) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """Per group, per-channel (min, max) of intra proxies and of frame-to-frame proxy differences."""
        out: dict[str, list] = {"intra": [], "diff": []}
        every = max(1, sum(len(s) for s in seqs) // max_frames)
        for (a, b), flow in zip(self.groups, self.flows):
            ys = [flow(torch.from_numpy(s[:, a:b]).to(self.row_w.device)).reshape(len(s), -1).cpu().numpy() for s in seqs]
            intra = np.concatenate([y[::every] for y in ys])
            diff = np.concatenate([np.diff(y, axis=0)[::every] for y in ys])
            out["intra"].append((intra.min(0), intra.max(0)))
            out["diff"].append((diff.min(0), diff.max(0)))
        return out

    @torch.no_grad()
    def freeze(self, seqs: list[np.ndarray], info: dict | None = None) -> LatentCodecModel:
        """Integer tables for every step preset; all groups of a table share one symbol count."""
        seen = self.value_ranges(seqs)
        tables: dict[str, list] = {k: [] for k in TABLE_KINDS}
        for kind, dens in (("intra", self.intra), ("diff", self.diff)):
            for step in self.cfg.step_presets:
                n_data = max(m.data_symbols(step, r) for m, r in zip(dens, seen[kind]))
                parts = [m.freeze(step, n_data, r) for m, r in zip(dens, seen[kind])]
                tables[kind].append(CodingTable(np.concatenate([p.offsets for p in parts]), np.concatenate([p.freqs for p in parts])))
        flows = []
        for f in self.flows:
            # The model file stores float16 weights; freeze the float32 copy to exactly those values.
            g = RealNVP(self.width, self.cfg.hidden, self.cfg.couplings)
            g.load_state_dict({k: v.detach().cpu().half().float() for k, v in f.state_dict().items()})
            flows.append(g.eval())
        return LatentCodecModel(self.rows, self.width, list(self.groups), list(self.cfg.step_presets), flows, tables, info=info)


# Periods g for which training fits empirical residual tables (the benchmarks' g grid; other g use Irwin–Hall only).
EMPIRICAL_RESIDUAL_G = (1, 2, 5, 10, 20, 40, 80)


FIT_PARAMS = StreamParams("open", 10, 0)  # the encoder tables are fitted for by default: the paper's open loop


def coded_integers(model: LatentCodecModel, proxies: list[np.ndarray], params: StreamParams
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the encoder configured by ``params`` (mode, g, step preset, keyframe interval, drift damping, rounding
    offset, decimation) sends for each of ``proxies`` ((frames, C) float, T of a training sequence): (differences
    (N, C), previous (N, C): the context memory each difference is coded after (SPEC §4.3), residuals (M, C)), int64.
    An all-zero difference without a residual is a repeat in a v5 stream: not coded, memory kept, so left out. Runs
    :class:`LatentStreamEncoder` itself (factorized tables, Irwin–Hall residuals: the integers do not depend on the
    tables), so a fit sees exactly the integers a stream with these parameters codes."""
    fit = replace(params, inter_context="factorized", residual="irwin_hall", target_kbps=None, step_set=())
    diffs, prevs, residuals = [], [], []
    for p in proxies:
        enc = LatentStreamEncoder(model, fit)
        prev = np.zeros(model.channels, np.int64)
        for y in p[::params.decimation]:
            c = enc.encode_proxy(y)
            if c.type.is_intra:
                prev = np.zeros_like(prev)
                continue
            v = c.values[0]
            if len(c.values) > 1:
                residuals.append(c.values[1])
            elif c.type == PacketType.INTER and not v.any():
                continue
            diffs.append(v)
            prevs.append(prev)
            prev = v
    empty = np.zeros((0, model.channels), np.int64)
    return tuple(np.stack(a) if a else empty for a in (diffs, prevs, residuals))  # type: ignore[return-value]


def fit_empirical_residuals(model: LatentCodecModel, seqs: list[np.ndarray], gs: Iterable[int] = EMPIRICAL_RESIDUAL_G,
                            max_frames: int = 4000, params: StreamParams = FIT_PARAMS) -> dict[int, list[CodingTable]]:
    """Empirical residual tables ``{g: [table per step preset]}``: histograms (:func:`histogram_freqs`, on the
    Irwin–Hall support of g) of the residual symbols the open-loop encoder ``params`` (its damping, rounding offset,
    decimation; mode open, period g, each step) sends on ``seqs`` (frames, rows, width) (:func:`coded_integers`).
    Uses up to ``max_frames`` frames, whole sequences first to last, with T run on whole sequences at once: a fit, so
    the last float bit of T does not matter."""
    proxies = _proxies(model, seqs, max_frames)
    out: dict[int, list[CodingTable]] = {}
    for g in gs:
        offset, n_data = residual_support(g)
        per_step = []
        for i in range(len(model.steps)):
            r = coded_integers(model, proxies, replace(params, mode="open", g=g, step_index=i))[2]
            freqs = histogram_freqs(r, offset, n_data)
            per_step.append(CodingTable(np.array([offset], np.int64), np.array([freqs], np.int32), shared=True))
        out[g] = per_step
    return out


def fit_context(model: LatentCodecModel, seqs: list[np.ndarray], classes: int = CONTEXT_CLASSES, max_frames: int = 4000,
                progress: bool = False, params: StreamParams = FIT_PARAMS) -> list[ContextTables]:
    """Temporal-context tables (bitstream v5, :func:`sganc_stream.latent.context.fit_context_tables`) for every step
    preset of ``model``, fitted on the differences the encoder ``params`` (at each preset) sends on up to
    ``max_frames`` frames of ``seqs`` (frames, rows, width), whole sequences first to last; ``progress``: a bar over
    the presets. InputError for a class count outside 1 … MAX_CLASSES or fewer than 2 coded frames in all."""
    if not 1 <= classes <= MAX_CLASSES:
        raise InputError(f"context classes must be between 1 and {MAX_CLASSES}, got {classes}")
    proxies = _proxies(model, seqs, max_frames)
    if sum(len(p[::params.decimation]) - 1 for p in proxies) < 1:
        raise InputError("fitting temporal-context tables needs sequences of at least 2 coded frames")
    out = []
    for i in tqdm(range(len(model.steps)), desc="context tables", unit="preset", disable=not progress):
        v, pv, _ = coded_integers(model, proxies, replace(params, step_index=i))
        if not len(v):  # every difference was a repeat (all zero): tables for zeros
            v = pv = np.zeros((1, model.channels), np.int64)
        out.append(fit_context_tables(v, pv, classes))
    return out


@torch.no_grad()
def _proxies(model: LatentCodecModel, seqs: list[np.ndarray], max_frames: int) -> list[np.ndarray]:
    """T of up to ``max_frames`` frames of ``seqs`` (whole sequences first to last), each (frames, C) float64."""
    proxies, used = [], 0
    for seq in seqs:
        if used >= max_frames:
            break
        seq = seq[: max_frames - used]
        w = torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32))
        parts = [flow(w[:, a:b].reshape(-1, model.width)).reshape(len(seq), -1) for flow, (a, b) in zip(model.flows, model.groups)]
        proxies.append(torch.cat(parts, 1).double().numpy())
        used += len(seq)
    return proxies


def add_coarser_steps(model: LatentCodecModel, seqs: list[np.ndarray], steps: Iterable[float],
                      max_frames: int = 4000) -> LatentCodecModel:
    """Add step presets coarser than the model's to a frozen model, in place (for rate control's low targets); returns
    the model. Its model id changes once saved. Each new step must be an integer multiple (≥ 2) of an existing preset.

    Difference tables: per-channel add-one histograms of the frame-to-frame differences of ``seqs`` (frames, rows,
    width) at the new step (:func:`channel_histogram_table`). Intra tables: the intra table of the coarsest preset
    that divides the new step, rebinned (:func:`rebinned`): intra values need more identities than a few clips hold.
    Measured on the default face model (held-out Obama clip, its Δ = 2 rebuilt from Δ = 1 / from training clips):
    rebinned intra +0.6 % bits against the trained table, histogram difference +4 %, while a rebinned difference
    table costs +55 % and a histogram intra table +31 %. Empirical residual tables, where the model has them, are
    refitted for every step, and so are temporal-context tables. InputError for a step that no preset divides.
    """
    bad = [s for s in steps if not (math.isfinite(s) and s > 0)]
    if bad:
        raise InputError(f"step presets must be finite and positive, got {bad[0]}")
    proxies = _proxies(model, seqs, max_frames)
    for step in sorted(steps):
        bases = [i for i, s in enumerate(model.steps) if step / s == int(step / s) and step / s >= 2]
        if not bases:
            raise InputError(f"step {step} is not an integer multiple (at least 2) of a preset ({model.steps})")
        base = max(bases, key=lambda i: model.steps[i])
        diffs = np.concatenate([np.rint(np.diff(p / step, axis=0)) for p in proxies])
        model.tables["intra"].append(rebinned(model.tables["intra"][base], int(step / model.steps[base])))
        model.tables["diff"].append(channel_histogram_table(diffs))
        model.steps.append(float(step))
    if model.empirical_residuals:
        model.empirical_residuals = fit_empirical_residuals(model, seqs, sorted(model.empirical_residuals), max_frames)
    if model.context_tables:
        model.context_tables = fit_context(model, seqs, model.context_tables[0].num_classes, max_frames)
    return model


def _sample(seqs: list[np.ndarray], cfg: TrainConfig, t: int, rng: np.random.Generator) -> np.ndarray:
    lens = np.array([len(s) - t + 1 for s in seqs], dtype=np.float64)
    idx = rng.choice(len(seqs), size=cfg.batch, p=lens / lens.sum())
    return np.stack([seqs[i][(s := rng.integers(0, len(seqs[i]) - t + 1)) : s + t] for i in idx])


CHECKPOINT_KEYS = ("trainer", "opt", "aux_opt", "step", "losses", "config", "shape")
CHECKPOINT_KIND = "train-latent-codec checkpoint"


def checkpoint_path(out: str | Path) -> Path:
    """Where training of ``out`` keeps its checkpoint: ``OUT.ckpt``."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _damaged(ckpt: Path, exc: Exception) -> InputError:
    reason = (str(exc).splitlines() or [""])[0][:100]
    return InputError(f"{ckpt}: damaged {CHECKPOINT_KIND} ({type(exc).__name__}: {reason}); remove it or drop --resume")


def training_history(out: str | Path) -> tuple[list[float], list[float]]:
    """(loss, bits per frame) of every step so far, from ``OUT.ckpt`` (bits NaN for steps of older checkpoints)."""
    ckpt = checkpoint_path(out)
    state = read_torch_file(ckpt, keys=CHECKPOINT_KEYS, what=CHECKPOINT_KIND)
    try:
        losses = [float(v) for v in state["losses"]]
        bits = [float(v) for v in state.get("bits", [])]
    except (TypeError, ValueError) as exc:
        raise _damaged(ckpt, exc) from None
    return losses, bits + [float("nan")] * (len(losses) - len(bits))


def describe_history(losses: list[float], bits: list[float]) -> str:
    """One log phrase: first and last loss and bits/frame, each the mean of up to 20 steps that do not overlap."""
    n = len(losses)
    if n == 0:
        return "no training steps"
    if n == 1:
        return f"1 step: loss {losses[0]:.3f}, {bits[0]:.0f} bits/frame"
    k = max(1, min(20, n // 2))
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    span = (f"step 1 → step {n}" if k == 1 else f"means of steps 1–{k} → {n - k + 1}–{n}")
    return (f"loss {mean(losses[:k]):.3f} → {mean(losses[-k:]):.3f}, bits/frame {mean(bits[:k]):.0f} → "
            f"{mean(bits[-k:]):.0f} ({span} of {n})")


def train_latent_codec(
    seqs: list[np.ndarray],
    out: str | Path,
    cfg: TrainConfig,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    info: dict[str, Any] | None = None,
    context_classes: int = CONTEXT_CLASSES,
) -> tuple[LatentCodecModel, list[float]]:
    """Train, checkpoint to ``OUT.ckpt`` as it goes, freeze and save to ``out``; returns (model, losses).

    The frozen model gets empirical residual tables (:data:`EMPIRICAL_RESIDUAL_G`) and, unless ``context_classes`` is
    0, temporal-context tables with that many channel classes (:func:`fit_context`), both fitted on ``seqs``.

    ``resume`` continues from the checkpoint; only ``steps`` may differ from the checkpoint's settings; a damaged or
    foreign checkpoint is a one-line error. ``info`` is merged into the codec's ``info`` (e.g. ``encoder_id``, the
    content hash of the encoder whose W+ the sequences are). Per-step losses and bits/frame stay in the checkpoint
    (:func:`training_history`).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    out = Path(out)
    ckpt = checkpoint_path(out)
    rows, width = seqs[0].shape[1:]
    t = min(cfg.slice_len, min(len(s) for s in seqs))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    trainer = LatentCodecTrainer(rows, width, cfg).to(device)
    aux_params = [p for n, p in trainer.named_parameters() if n.endswith("quantiles")]
    main_params = [p for n, p in trainer.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    start, losses, bits = 0, [], []
    if resume and ckpt.is_file():
        state = read_torch_file(ckpt, keys=CHECKPOINT_KEYS, what=CHECKPOINT_KIND)
        try:
            saved = {k: v for k, v in json.loads(state["config"]).items() if k != "steps"}
            shape = tuple(int(v) for v in state["shape"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise _damaged(ckpt, exc) from None
        if saved != {k: v for k, v in asdict(cfg).items() if k != "steps"} or shape != (rows, width):
            raise InputError(f"{ckpt}: checkpoint was made with other settings; remove it or drop --resume")
        try:
            trainer.load_state_dict(state["trainer"])
            opt.load_state_dict(state["opt"])
            aux_opt.load_state_dict(state["aux_opt"])
            start, losses = int(state["step"]), [float(v) for v in state["losses"]]
            bits = [float(v) for v in state.get("bits", [])]
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _damaged(ckpt, exc) from None
        bits += [float("nan")] * (len(losses) - len(bits))
        rng = np.random.default_rng([cfg.seed, start])

    def save_checkpoint(step: int) -> None:
        with atomic_output(ckpt) as tmp:
            torch.save(
                {"trainer": trainer.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(), "step": step,
                 "losses": losses, "bits": bits, "config": json.dumps(asdict(cfg), sort_keys=True), "shape": [rows, width]},
                tmp,
            )

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train latent codec", disable=not progress, unit="step", mininterval=2.0)
    for step in bar:
        w = torch.from_numpy(_sample(seqs, cfg, t, rng)).to(device)
        loss, bpf, mse = trainer.loss(w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(main_params, 10.0)
        opt.step()
        aux = trainer.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        losses.append(loss.item())
        bits.append(bpf.item())
        bar.set_postfix(bits_per_frame=f"{bpf.item():.0f}", mse=f"{mse.item():.2e}")
        if (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(step + 1)
    save_checkpoint(max(start, cfg.steps))
    info = {"train_steps": cfg.steps, "lambda": cfg.lam, "groups": cfg.groups, "sequences": len(seqs),
            "frames": int(sum(len(s) for s in seqs)), "final_loss": float(np.mean(losses[-50:])) if losses else None,
            **(info or {})}
    model = trainer.cpu().freeze(seqs, info)
    model.empirical_residuals = fit_empirical_residuals(model, seqs)
    model.context_tables = fit_context(model, seqs, context_classes, progress=progress) if context_classes else []
    model.model_id = model.save(out)
    return model, losses
