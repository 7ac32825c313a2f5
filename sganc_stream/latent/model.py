"""The frozen latent codec model: one flow T per stage group plus integer tables per step preset.

This is what encoder and decoder load. It is stored in a bundle under the ``codec.`` prefix (flow weights
as float16, table offsets int32, frequencies uint16) with a ``codec`` config entry; the bundle's content hash is the model id.
T and T⁻¹ run through a :class:`FlowRunner`: numpy, all stage groups batched, by default
(:class:`sganc_stream.latent.numpy_flow.NumpyFlows`, built from the flows' weights on first use), PyTorch eager
(:class:`sganc_stream.latent.flow.TorchFlows`, the reference the ONNX graphs are exported from), or ONNX Runtime
(:mod:`sganc_stream.onnx_runtime`); this module imports torch only when the PyTorch flows are built or used.
In the file these tensors are packed losslessly (:mod:`sganc_stream.bundle`, bitstream_spec/SPEC.md §5): the tables
load bit-identical, so nothing here depends on the storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.entropy.irwin_hall import MAX_G, residual_support
from sganc_stream.entropy.irwin_hall import residual_table as irwin_hall_table
from sganc_stream.entropy.tables import CodingTable
from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.latent.context import MAX_CLASSES, ContextTables

if TYPE_CHECKING:
    import torch

    from sganc_stream.latent.flow import RealNVP

TABLE_KINDS = ("intra", "diff")
# Residual (drift refresh) tables: the paper's Irwin–Hall law, derived (StreamParams' default), or a histogram of
# training residuals stored in the model for some periods g (bitstream v3 names the choice in the stream header). The
# commands' default, ``--residual-table auto``, takes the model's empirical table where it has one for the stream's g
# (``latent.codec.resolve_residual``).
RESIDUAL_TABLES = ("irwin_hall", "empirical")
# T⁻¹ runs in float32, so its output may differ in the last bits between machines, BLAS/ATen code paths and devices;
# the integer state it starts from never does. Two conforming decoders agree within
# |a − b| ≤ DECODED_ATOL + DECODED_RTOL·|b| (SPEC §7). Largest gap |a − b| / (1 + |b|) measured by
# benchmarks/float_agreement.py: 6.7e-7 (the numpy reference decoder against this library; up to 1.0e-6 seen on
# other 18×512 streams), so the bound has a margin of about 10×.
DECODED_RTOL = 1e-5
DECODED_ATOL = 1e-5


class FlowRunner(Protocol):
    """T and T⁻¹ over a whole W+ frame: float32 ``(rows, width)`` → float32 ``(rows, width)``, every stage group."""

    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def inverse(self, y: np.ndarray) -> np.ndarray: ...


def default_preset(steps: list[float], default_step: float | None) -> float:
    """The step commands code at without ``--step``: a codec config's ``default_step``, else its middle preset."""
    return steps[len(steps) // 2] if default_step is None else default_step


@dataclass
class LatentCodecModel:
    """Flows (one per group), tables[kind][step index], and the config that describes them.

    ``runner``: how T and T⁻¹ run; None builds a :class:`~sganc_stream.latent.numpy_flow.NumpyFlows` from ``flows``'
    weights on first use (so set ``runner = None`` again after changing them). A model loaded for ONNX Runtime
    has a runner and no PyTorch flows (``flows == []``: it cannot be saved or trained).
    ``empirical_residuals[g][step index]``: frozen empirical residual tables (one shared row each) for the periods g
    the model was fitted for; empty for models without them.
    ``context_tables[step index]``: the temporal-context difference tables (bitstream v5, :mod:`sganc_stream.latent.context`)
    of every preset; empty for models without them.
    ``default_step``: the preset commands code at without ``--step`` (config ``default_step``); None = the middle
    preset (models whose config does not name one).
    ``tables_encoder``: the encoder its context and empirical residual tables were fitted for (config
    ``tables_encoder``, written by ``fit-context-tables``: mode, g, drift_damping, rounding_offset, decimation); None
    when not recorded. Commands' ``auto`` encoder choices follow it (``latent.codec.resolve_encoder_choices``).
    """

    rows: int
    width: int
    groups: list[tuple[int, int]]
    steps: list[float]
    flows: list[RealNVP]
    tables: dict[str, list[CodingTable]]
    model_id: str = ""
    info: dict[str, Any] | None = None
    empirical_residuals: dict[int, list[CodingTable]] = field(default_factory=dict)
    runner: FlowRunner | None = None
    context_tables: list[ContextTables] = field(default_factory=list)
    default_step: float | None = None
    tables_encoder: dict[str, Any] | None = None

    @property
    def channels(self) -> int:
        return self.rows * self.width

    def step_index(self, step: float | None) -> int:
        """Index of a step preset; ``None`` picks the model's default step (the middle preset if it names none).
        InputError for a step that is not a preset."""
        if step is None:
            return self.step_index(default_preset(self.steps, self.default_step))
        for i, s in enumerate(self.steps):
            if abs(s - step) <= 1e-9 * max(1.0, abs(s)):
                return i
        raise InputError(f"step {step} is not a preset of this model (presets: {', '.join(map(str, self.steps))})")

    def _runner(self) -> FlowRunner:
        if self.runner is None:  # built on first use, so that a model made for ONNX Runtime never imports torch
            from sganc_stream.latent.numpy_flow import NumpyFlows

            weights = [{k: v.detach().cpu().numpy() for k, v in flow.state_dict().items()} for flow in self.flows]
            self.runner = NumpyFlows(weights, self.groups, self.width)
        return self.runner

    def residual_table(self, g: int, step_index: int, residual: str) -> CodingTable:
        """The residual table of period ``g`` (1 … 255) at a step preset: ``irwin_hall`` or ``empirical``.

        InputError when the model holds no empirical table for ``g`` (it names the periods it has)."""
        if residual == "irwin_hall":
            return irwin_hall_table(g)
        if g not in self.empirical_residuals:
            have = ", ".join(map(str, sorted(self.empirical_residuals))) or "none"
            raise InputError(f"this model has no empirical residual table for g = {g} (periods it has: {have}); "
                             "use the Irwin–Hall table or one of those periods")
        return self.empirical_residuals[g][step_index]

    def context_table(self, step_index: int) -> ContextTables:
        """The temporal-context difference tables of a step preset; InputError when the model has none."""
        if not self.context_tables:
            raise InputError("this model has no temporal-context tables (--inter-context temporal needs a model fitted "
                             "with them); use --inter-context factorized")
        return self.context_tables[step_index]

    def to_proxy(self, wplus: np.ndarray) -> np.ndarray:
        """T applied per group: (rows, width) float → flat (C,) float64 proxy vector."""
        return self._runner().forward(np.ascontiguousarray(wplus, dtype=np.float32)).reshape(-1).astype(np.float64)

    def from_state(self, state: np.ndarray, step_index: int) -> np.ndarray:
        """T⁻¹ of the integer state times the step: flat (C,) int → (rows, width) float32 W+ frame.

        The only float computation on the decoder side; it depends on nothing but the integers. Exact on one machine
        and code path; elsewhere within :data:`DECODED_RTOL` / :data:`DECODED_ATOL` (SPEC §6–7).
        """
        y = (state.astype(np.float32) * np.float32(self.steps[step_index])).reshape(self.rows, self.width)
        return self._runner().inverse(y)

    def to_bundle_part(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors under ``codec.``, the ``codec`` config entry)."""
        import torch

        if not self.flows:
            raise ValueError("this latent codec was loaded without its PyTorch flows (ONNX Runtime): it cannot be saved")
        tensors: dict[str, torch.Tensor] = {}
        for g, flow in enumerate(self.flows):
            for k, v in flow.state_dict().items():
                tensors[f"codec.flow.{g}.{k}"] = v.detach().to(torch.float16)
        tensors.update(self.table_tensors())
        hidden = self.flows[0].layers[0].scale[0].out_features if self.flows[0].layers else 0
        config = {
            "rows": self.rows,
            "width": self.width,
            "groups": [list(g) for g in self.groups],
            "steps": self.steps,
            "flow": {"couplings": len(self.flows[0].layers), "hidden": hidden},
            "info": self.info or {},
            **self.table_config(),
        }
        return tensors, config

    def table_tensors(self) -> dict[str, torch.Tensor]:
        """The bundle tensors of every frozen table (``codec.tables.*``, ``codec.context.*``): offsets int32,
        frequencies uint16 (every frequency is in 1 … 65535, so lossless), context classes uint8."""
        import torch

        tensors: dict[str, torch.Tensor] = {}
        for kind in TABLE_KINDS:
            for i, t in enumerate(self.tables[kind]):
                tensors[f"codec.tables.{kind}.{i}.offsets"] = torch.from_numpy(t.offsets.astype(np.int32))
                tensors[f"codec.tables.{kind}.{i}.freqs"] = torch.from_numpy(t.freqs.astype(np.uint16))
        tensors.update(residual_tensors(self.empirical_residuals))
        tensors.update(context_tensors(self.context_tables))
        return tensors

    def table_config(self) -> dict[str, Any]:
        """The ``codec`` config entries the tables define: ``steps``, and ``empirical_residual_g`` and
        ``context_classes`` where the model has such tables, ``default_step`` where it names one (absent otherwise,
        so models without them keep their config and model id)."""
        config: dict[str, Any] = {"steps": self.steps}
        if self.default_step is not None:
            config["default_step"] = self.default_step
        if self.empirical_residuals:
            config["empirical_residual_g"] = sorted(self.empirical_residuals)
        if self.context_tables:
            config["context_classes"] = self.context_tables[0].num_classes
        return config

    def save(self, path: str | Path) -> str:
        """Write a codec-only bundle; returns its model id."""
        tensors, config = self.to_bundle_part()
        bundle = Bundle(tensors=tensors, config={"codec": config})
        bundle.save(path)
        return bundle.model_id

    @classmethod
    def from_bundle(cls, bundle: Bundle, source: str = "model", runner: FlowRunner | None = None) -> LatentCodecModel:
        """The codec part of a bundle (torch tensors or numpy arrays). With ``runner`` (made from this bundle's flows,
        e.g. its ONNX graphs) the PyTorch flows are not built and torch is not imported."""
        cfg = bundle.config.get("codec")
        if not isinstance(cfg, dict):
            raise no_codec_error(source)
        try:
            rows, width, couplings, hidden = cfg["rows"], cfg["width"], cfg["flow"]["couplings"], cfg["flow"]["hidden"]
            groups = [(a, b) for a, b in cfg["groups"]]
            steps = [float(s) for s in cfg["steps"]]
            residual_gs = list(cfg.get("empirical_residual_g", []))
            context_classes = cfg.get("context_classes", 0)
            default_step = None if cfg.get("default_step") is None else float(cfg["default_step"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: malformed latent codec config") from None
        ints = (rows, width, couplings, hidden, *(v for g in groups for v in g))
        # Bounds before anything is built: the config decides every size (rows/width as in the stream header).
        if (any(type(v) is not int for v in ints) or not 1 <= rows <= 64 or not 2 <= width <= 4096
                or not 0 <= couplings <= 64 or not 0 <= hidden <= 4096 or (couplings and not hidden)
                or not 1 <= len(steps) <= 64
                or not all(0 < s < float("inf") for s in steps) or not groups
                or [a for a, _ in groups] != [0, *(b for _, b in groups[:-1])] or groups[-1][1] != rows
                or any(b <= a for a, b in groups)
                or len(residual_gs) > MAX_G or len(set(residual_gs)) != len(residual_gs)
                or any(type(g) is not int or not 1 <= g <= MAX_G for g in residual_gs)
                or type(context_classes) is not int or not 0 <= context_classes <= MAX_CLASSES
                or (default_step is not None and default_step not in steps)):
            raise CheckpointError(f"{source}: latent codec config out of range (rows, width, groups, steps, flow, "
                                  "empirical_residual_g, context_classes, default_step)")
        part = bundle.part("codec")
        try:
            flows = []
            for g in range(len(groups) if runner is None else 0):
                from sganc_stream.latent.flow import RealNVP

                sd = {k[len(f"flow.{g}."):]: v.float() for k, v in part.items() if k.startswith(f"flow.{g}.")}
                if couplings and (sd.get("layers.0.scale.0.weight") is None or sd["layers.0.scale.0.weight"].shape[0] != hidden
                                  or f"layers.{couplings - 1}.shift.4.bias" not in sd):
                    raise CheckpointError(f"{source}: latent codec flow {g} does not hold the {couplings} couplings of "
                                          f"width {hidden} its config states")
                flow = RealNVP(width, hidden=hidden, couplings=couplings)
                flow.load_state_dict(sd, strict=True)
                flows.append(flow.eval())
            tables = {
                kind: [
                    CodingTable(
                        offsets=np.asarray(part[f"tables.{kind}.{i}.offsets"]).astype(np.int64),
                        freqs=np.asarray(part[f"tables.{kind}.{i}.freqs"]).astype(np.int32),
                    )
                    for i in range(len(steps))
                ]
                for kind in TABLE_KINDS
            }
            empirical = {g: [CodingTable(offsets=np.asarray(part[f"tables.residual.{g}.{i}.offsets"]).astype(np.int64),
                                         freqs=np.asarray(part[f"tables.residual.{g}.{i}.freqs"]).astype(np.int32),
                                         shared=True)
                             for i in range(len(steps))]
                         for g in residual_gs}
            contexts = [ContextTables(np.asarray(part[f"context.{i}.classes"]).astype(np.int64),
                                      np.asarray(part[f"context.{i}.offsets"]).astype(np.int64),
                                      np.asarray(part[f"context.{i}.freqs"]).astype(np.int32))
                        for i in range(len(steps) if context_classes else 0)]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{source}: malformed latent codec ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        if any(t.freqs.shape[0] != rows * width or t.offsets.shape != (rows * width,) for ts in tables.values() for t in ts):
            raise CheckpointError(f"{source}: latent codec tables do not cover {rows}x{width}")
        if any(t.offsets.tolist() != [residual_support(g)[0]] or t.freqs.shape != (1, residual_support(g)[1] + 1)
               for g, ts in empirical.items() for t in ts):
            raise CheckpointError(f"{source}: an empirical residual table does not have its period's support")
        if any(t.classes.shape != (rows * width,) or t.num_classes != context_classes for t in contexts):
            raise CheckpointError(f"{source}: temporal-context tables do not cover {rows}x{width} with "
                                  f"{context_classes} classes")
        return cls(rows, width, groups, steps, flows, tables, model_id=bundle.model_id, info=cfg.get("info"),
                   empirical_residuals=empirical, runner=runner, context_tables=contexts, default_step=default_step,
                   tables_encoder=cfg["tables_encoder"] if isinstance(cfg.get("tables_encoder"), dict) else None)


def context_tensors(tables: list[ContextTables]) -> dict[str, torch.Tensor]:
    """The bundle tensors (``codec.context.<step index>.*``) of temporal-context tables, one per step preset: classes
    uint8, offsets int32, frequencies uint16 (all lossless for valid tables)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    for i, ct in enumerate(tables):
        tensors[f"codec.context.{i}.classes"] = torch.from_numpy(ct.classes.astype(np.uint8))
        tensors[f"codec.context.{i}.offsets"] = torch.from_numpy(ct.offsets.astype(np.int32))
        tensors[f"codec.context.{i}.freqs"] = torch.from_numpy(ct.freqs.astype(np.uint16))
    return tensors


def residual_tensors(empirical: dict[int, list[CodingTable]]) -> dict[str, torch.Tensor]:
    """The bundle tensors (``codec.tables.residual.<g>.<step index>.*``) of empirical residual tables ``{g: [table
    per step preset]}``: offsets int32, frequencies uint16 (lossless for valid tables)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    for g, per_step in empirical.items():
        for i, t in enumerate(per_step):
            tensors[f"codec.tables.residual.{g}.{i}.offsets"] = torch.from_numpy(t.offsets.astype(np.int32))
            tensors[f"codec.tables.residual.{g}.{i}.freqs"] = torch.from_numpy(t.freqs.astype(np.uint16))
    return tensors


def with_codec_tables(bundle: Bundle, codec: LatentCodecModel) -> Bundle:
    """``bundle`` (a codec-only or a face-model bundle) with its codec part's step presets and frozen tables
    (difference, intra, empirical residual, temporal-context) replaced by ``codec``'s (the same codec with refitted
    or added tables); the flow weights and every other tensor and config entry are kept as stored, so only the model
    id changes. ValueError for a bundle without a codec part or a codec of another layout."""
    cfg = bundle.config.get("codec")
    if not isinstance(cfg, dict) or (cfg.get("rows"), cfg.get("width")) != (codec.rows, codec.width):
        raise ValueError("tables go into a bundle with a latent codec of the same layout")
    tensors = {k: v for k, v in bundle.tensors.items() if not k.startswith(("codec.tables.", "codec.context."))}
    tensors.update(codec.table_tensors())
    config = {k: v for k, v in cfg.items()
              if k not in ("steps", "empirical_residual_g", "context_classes", "default_step")}
    return Bundle(tensors, {**bundle.config, "codec": {**config, **codec.table_config()}})


def no_codec_error(source: str) -> CheckpointError:
    """The error for a bundle without a ``codec`` part, naming the command that adds one."""
    return CheckpointError(f"{source}: bundle has no latent codec (a generator+encoder bundle such as `weights bundle` "
                           "writes); add one with `sganc-stream complete-bundle`")


def load_latent_codec(path: str | Path) -> LatentCodecModel:
    """Load the codec part of a bundle file (a codec-only file or a full face-model bundle)."""
    return LatentCodecModel.from_bundle(load_bundle(path), source=str(path))
