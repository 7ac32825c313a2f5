"""ONNX Runtime backend for the model parts: E, T, T⁻¹ and G on the CPU without importing torch.

A decode-only process needs T⁻¹ and G, the live call all four (the call's default runtime: 2.0–2.4× faster than
PyTorch eager per stage, README "CPU runtimes"); the PyTorch path costs the ``import torch`` floor (about 700 MB RSS
and seconds of start-up on the PyPI CUDA wheel). Here the bundle is read with safetensors' numpy reader (the model id is
the same content hash, :mod:`sganc_stream.bundle`), the integer tables are numpy, rANS is constriction, and the
networks run as ONNX graphs in ONNX Runtime (``pip install 'sganc-stream[onnx]'``).

The graphs come from the bundle, exported once with torch (:func:`sganc_stream.models.onnx_export.export_bundle`) into
a user cache folder named by the bundle's model id (:func:`graph_dir`); a later process with the graphs in place never
imports torch. Outputs agree with PyTorch's within float tolerance, not bit for bit: T⁻¹ within SPEC §7's bound
(``DECODED_RTOL`` / ``DECODED_ATOL``), so a stream's integer states, and with them conformance, are unchanged;
decoded pixels within a few uint8 levels (tests/test_onnx_runtime.py).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.errors import CheckpointError, InputError, extra_hint, import_extra
from sganc_stream.latent.model import LatentCodecModel
from sganc_stream.latent.sequence import check_stream_model

RUNTIMES = ("torch", "onnx")
ENCODER_PRECISIONS = ("fp32", "int8")  # E's graph: as exported, or quantized (sganc_stream.onnx_quantize)
ONNX_EXTRA = extra_hint("onnx")
GRAPH_FORMAT = "v1"  # bump when the exported graphs change, so that old caches are not used


def cache_root() -> Path:
    """``$SGANC_CACHE_DIR``, else ``$XDG_CACHE_HOME/sganc-stream``, else ``~/.cache/sganc-stream``."""
    if os.environ.get("SGANC_CACHE_DIR"):
        return Path(os.environ["SGANC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sganc-stream"


def graph_dir(model_id: str) -> Path:
    """Where the ONNX graphs of the bundle with this model id live."""
    return cache_root() / "onnx" / GRAPH_FORMAT / model_id


def require_onnxruntime() -> Any:
    """The onnxruntime module; InputError, one line naming the ``onnx`` extra, when it is not installed."""
    return import_extra("onnx", "--runtime onnx", "onnxruntime")


def session_options(threads: int = 1) -> Any:
    """ONNX Runtime session options: ``threads`` intra-op threads, one inter-op thread, all graph optimisations.

    One thread by default for the reason :data:`sganc_stream.threads.DEFAULT_THREADS` gives for torch: the graphs are
    small, and on a shared machine every parallel region waits for a descheduled thread."""
    ort = require_onnxruntime()
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return opts


class Graph:
    """One ONNX graph: ``run(x)`` → its single output (numpy in, numpy out)."""

    def __init__(self, path: Path, threads: int) -> None:
        ort = require_onnxruntime()
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise CheckpointError(f"{path}: unreadable ONNX graph ({type(exc).__name__}); delete {path.parent} and "
                                  "run again to export it afresh") from None
        self._input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


class OnnxFlows:
    """T and T⁻¹ as ONNX graphs (a :class:`sganc_stream.latent.model.FlowRunner`): float32 ``(rows, width)`` both ways.

    Each graph is loaded on its first call: a decoder never loads T (a session costs start-up time and memory)."""

    def __init__(self, folder: Path, threads: int) -> None:
        self._folder, self._threads = folder, threads
        self._graphs: dict[str, Graph] = {}

    def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        if name not in self._graphs:
            self._graphs[name] = Graph(self._folder / f"{name}.onnx", self._threads)
        return self._graphs[name].run(np.ascontiguousarray(x, dtype=np.float32))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run("flow_forward", x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self._run("flow_inverse", y)


def ensure_graphs(path: str | os.PathLike[str], model_id: str, names: tuple[str, ...], *, quiet: bool = False) -> Path:
    """The cache folder holding graphs ``names`` of bundle ``path`` (id ``model_id``); missing ones are exported
    first, which imports torch (once per model and machine; a line on stderr says so unless ``quiet``)."""
    folder = graph_dir(model_id)
    if all((folder / f"{n}.onnx").is_file() for n in names):
        return folder
    if not quiet:
        print(f"exporting the ONNX graphs of model {model_id[:16]}… to {folder} (once per model)", file=sys.stderr)
    from sganc_stream.models.onnx_export import export_bundle

    made = export_bundle(path, folder, [n for n in names if not (folder / f"{n}.onnx").is_file()])
    missing = [n for n in names if n not in made and not (folder / f"{n}.onnx").is_file()]
    if missing:
        raise CheckpointError(f"{path}: bundle has no {', '.join(missing)} part to export")
    return folder


def load_onnx_codec(path: str | os.PathLike[str], *, threads: int = 1, bundle: Bundle | None = None,
                    quiet: bool = False) -> LatentCodecModel:
    """The latent codec of bundle ``path`` with T and T⁻¹ in ONNX Runtime (``bundle``: the file already read as
    numpy). Same model id, tables and coding as :func:`sganc_stream.latent.model.load_latent_codec`."""
    bundle = bundle if bundle is not None else load_bundle(path, framework="numpy")
    model_id = bundle.model_id
    folder = ensure_graphs(path, model_id, ("flow_forward", "flow_inverse"), quiet=quiet)
    runner = OnnxFlows(folder, threads)
    codec = LatentCodecModel.from_bundle(bundle, source=str(path), runner=runner)
    codec.model_id = model_id  # the whole file's content hash, which every stream header carries
    return codec


@dataclass
class OnnxFaceModel:
    """A bundle loaded in ONNX Runtime: latent codec (T and T⁻¹ as graphs), G with the image conversion, and, when
    loaded for encoding, E with its input conversion.

    What :class:`sganc_stream.decoding.FrameDecoder` (``size``, ``codec``, ``model_id``, ``source``, ``render``) and
    :class:`sganc_stream.encoding.FrameEncoder` (also ``encoder``, ``align_size``, ``project``) need of a face model,
    without torch."""

    generator: Graph
    codec: LatentCodecModel
    config: dict[str, Any]
    model_id: str
    source: str
    size: int
    device: str = "cpu"
    encoder: Graph | None = None  # None: loaded for decoding only
    encoder_precision: str | None = None  # "fp32" or "int8" when loaded for encoding

    @property
    def align_size(self) -> int:
        """Side of the aligned crops E takes (its input side), else the generator's side."""
        return int(self.config["encoder"]["input_size"]) if self.encoder is not None else self.size

    def project(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 RGB crops ``(n, S, S, 3)``, S = ``align_size`` → E's W+ ``(n, rows, width)`` float32; the
        graph takes one crop at a time. CheckpointError without an encoder, InputError for other crops."""
        if self.encoder is None:
            raise CheckpointError(f"{self.source}: model loaded without its encoder, it can decode but not encode")
        side = self.align_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (side, side, 3):
            raise InputError(f"E takes uint8 crops (n, {side}, {side}, 3), got {crops.dtype} {crops.shape}")
        c = np.ascontiguousarray(crops)
        return np.concatenate([self.encoder.run(c[i:i + 1]) for i in range(len(c))])

    def render(self, wplus: np.ndarray) -> np.ndarray:
        """W+ ``(n, rows, width)`` → uint8 RGB ``(n, size, size, 3)`` (G's output clamped to [-1, 1], as in PyTorch);
        the graph takes one frame at a time."""
        w = np.ascontiguousarray(wplus, dtype=np.float32)
        return np.concatenate([self.generator.run(w[i:i + 1]) for i in range(len(w))])


def load_onnx_face_model(path: str | os.PathLike[str], *, threads: int = 1, quiet: bool = False,
                         encode: bool = False, stream_model_id: str | None = None,
                         encoder_precision: str = "fp32") -> OnnxFaceModel:
    """Load a face-model bundle for decoding (``encode``: and encoding) in ONNX Runtime, exporting its graphs first if
    the cache lacks them. Each graph is its own session with ``threads`` intra-op threads. ``encoder_precision``
    ``int8``: E runs as its int8 graph, quantized on first use (:mod:`sganc_stream.onnx_quantize`, seconds; cached
    beside the others as ``encoder_int8.onnx``).

    CheckpointError for an unreadable bundle, one without a generator or latent codec (or, with ``encode``, without
    an encoder), or one holding bfloat16 tensors (numpy has no bfloat16: use ``--runtime torch``); InputError without
    onnxruntime or for an unknown ``encoder_precision``; ModelMismatchError, before any graph is exported, when ``stream_model_id`` (the header of the stream
    to decode) is not the bundle's id."""
    require_onnxruntime()  # the missing extra is reported before any work
    if encoder_precision not in ENCODER_PRECISIONS:
        raise InputError(f"encoder precision must be one of {', '.join(ENCODER_PRECISIONS)}, got {encoder_precision!r}")
    bundle = load_bundle(path, framework="numpy")
    if stream_model_id is not None:
        check_stream_model(stream_model_id, bundle.model_id)
    gen = bundle.config.get("generator")
    if not isinstance(gen, dict) or "codec" not in bundle.config:
        raise CheckpointError(f"{path}: not a face model with a generator and a latent codec (cannot decode video)")
    if encode and not isinstance(bundle.config.get("encoder"), dict):
        raise CheckpointError(f"{path}: model has no encoder, it can decode but not encode")
    parts = ("flow_forward", "flow_inverse", "generator") + (("encoder",) if encode else ())
    folder = ensure_graphs(path, bundle.model_id, parts, quiet=quiet)  # one export (one torch load) for all of them
    codec = load_onnx_codec(path, threads=threads, bundle=bundle, quiet=quiet)
    graph = Graph(folder / "generator.onnx", threads)
    shape = graph.session.get_outputs()[0].shape  # (batch, size, size, 3)
    if len(shape) != 4 or not isinstance(shape[1], int) or shape[2] != shape[1] or shape[3] != 3:
        raise CheckpointError(f"{folder / 'generator.onnx'}: output shape {shape} is not (n, size, size, 3)")
    model = OnnxFaceModel(graph, codec, bundle.config, codec.model_id, str(path), int(shape[1]))
    if encode:
        name = "encoder" if encoder_precision == "fp32" else "encoder_int8"
        if not (folder / f"{name}.onnx").is_file():
            if not quiet:
                print(f"quantizing E of model {model.model_id[:16]}… to int8 in {folder} (once per model)", file=sys.stderr)
            from sganc_stream.onnx_quantize import quantize_encoder_from_prior

            quantize_encoder_from_prior(folder / "encoder.onnx", folder / f"{name}.onnx", codec, model.render,
                                        int(bundle.config["encoder"]["input_size"]))
        model.encoder, model.encoder_precision = Graph(folder / f"{name}.onnx", threads), encoder_precision
    return model
