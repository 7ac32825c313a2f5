"""Load the official FFHQ checkpoints and our bundles; write bundles from models.

Accepted inputs (the format is detected from the file's bytes, not its name):
* rosinality StyleGAN2 ``.pt`` (``{'g_ema': state_dict, 'latent_avg': [512]}``),
* pSp / e4e ``.pt`` (``{'state_dict': {'encoder.*', 'decoder.*'}, 'opts': {...}, 'latent_avg': [18, 512]}``),
* a sganc-stream bundle (safetensors; ``generator.*``, ``encoder.*`` and parts we do not own, e.g. ``codec.*``).
``.pt`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused,
never executed. Every problem becomes one :class:`CheckpointError` line naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sganc_stream.bundle import Bundle, encoder_id, is_bundle_file, load_bundle
from sganc_stream.errors import CheckpointError
from sganc_stream.models.encoders import Encoder4Editing, GradualStyleEncoder
from sganc_stream.models.fast_encoder import FastEncoder, FastEncoderConfig
from sganc_stream.models.stylegan2 import Generator, GeneratorConfig

# pSp's Normalize([0.5]*3, [0.5]*3) after ToTensor: [0, 1] → [-1, 1].
PSP_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# FFHQ alignment (NVlabs ffhq-dataset recipe on dlib's 68 landmarks), as the pSp/e4e models expect it.
# Values as in sganc_stream.face.ffhq_quad: quad centre = eye midpoint + 0.1 x (eye → mouth midpoint),
# half-size = max(2.0 x eye distance, 1.8 x eye-to-mouth distance).
FFHQ_ALIGNMENT = {"method": "ffhq", "landmarks": "dlib68", "centre_shift": 0.1, "eye_scale": 2.0, "mouth_scale": 1.8}
NVIDIA_NC = "Weights: NVIDIA Source Code License-NC / CC BY-NC 4.0 (StyleGAN2 FFHQ); research and non-commercial use only"
ENCODER_CLASSES = {"psp": GradualStyleEncoder, "e4e": Encoder4Editing}
OPTS_ENCODER_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}
COUNTER = "num_batches_tracked"
SHOWN = 3  # keys listed per category in an error line


@dataclass
class LoadedModel:
    """What a file holds: a generator, optionally an encoder, and the bundle config describing them.

    ``w_avg`` is the mean mapping output ``(style_dim,)`` when the file stores one (rosinality ``.pt``).
    ``model_id`` is the content hash the bitstream carries: for a bundle file, that file's id (parts we
    do not own included); otherwise the id the equivalent bundle would have.
    """

    generator: Generator
    encoder: nn.Module | None
    config: dict[str, Any]
    source: str
    w_avg: torch.Tensor | None = None
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Bundle tensors; BatchNorm ``num_batches_tracked`` counters (training-only) are left out."""
        out = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        if self.encoder is not None:
            out.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items() if not k.endswith(COUNTER)})
        out.update(self.extra_tensors)
        return out

    def to_bundle(self) -> Bundle:
        return Bundle(tensors=self.tensors(), config=dict(self.config))

    @cached_property
    def model_id(self) -> str:
        return self.to_bundle().model_id

    @cached_property
    def encoder_id(self) -> str | None:
        """Content hash of the encoder alone (:func:`sganc_stream.bundle.encoder_id`); None without an encoder."""
        if self.encoder is None:
            return None
        tensors = {k[len("encoder."):]: v for k, v in self.tensors().items() if k.startswith("encoder.")}
        return encoder_id(tensors, self.config["encoder"])

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write as a bundle; returns its model id."""
        bundle = self.to_bundle()
        bundle.save(path)
        return bundle.model_id


def generator_config_dict(g: Generator) -> dict[str, Any]:
    """Bundle ``generator`` config: layout parameters plus ``rows``/``width`` of W+ for the codec."""
    return {**g.config.to_dict(), "rows": g.n_latent, "width": g.config.style_dim}


def encoder_config_dict(e: nn.Module) -> dict[str, Any]:
    if isinstance(e, FastEncoder):
        base = e.config.to_dict()
    else:
        base = {"type": e.kind, "n_latent": e.n_latent, "width": 512}
    return {**base, "input_size": e.input_size, "input_range": [-1.0, 1.0], "normalization": PSP_NORMALIZATION}


def save_model_bundle(path: str | os.PathLike[str], generator: Generator, encoder: nn.Module | None = None, *,
                      alignment: dict[str, Any] | None = None, licence: str = "", extra_config: dict[str, Any] | None = None,
                      extra_tensors: dict[str, torch.Tensor] | None = None, encoder_weights_id: str | None = None) -> str:
    """Write generator (+ encoder, + e.g. ``codec.*`` tensors and config) as one bundle; returns the model id.

    ``encoder_weights_id``: the encoder id of the weights ``encoder`` was cast from (float16 storage), recorded as
    ``encoder.weights_id`` so codec fit checks still recognise it.
    """
    if encoder is not None and encoder.n_latent != generator.n_latent:
        raise CheckpointError(f"encoder gives {encoder.n_latent} W+ rows but the generator takes {generator.n_latent}")
    config: dict[str, Any] = {"generator": generator_config_dict(generator), "licence": licence,
                              "alignment": alignment if alignment is not None else FFHQ_ALIGNMENT}
    if encoder is not None:
        config["encoder"] = encoder_config_dict(encoder)
        if encoder_weights_id:
            config["encoder"]["weights_id"] = encoder_weights_id
    config.update(extra_config or {})
    model = LoadedModel(generator, encoder, config, "bundle", extra_tensors=dict(extra_tensors or {}))
    return model.save(path)


# ----------------------------------------------------------------------------------------------------
# Reading files


def _pickle_imports(path: Path) -> list[str]:
    """Globals a pickle would import, found by reading its opcodes (nothing is executed)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(name) if name else b""
        else:
            data = path.read_bytes()
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
            if op.name == "STOP":
                break
    except Exception:  # a damaged pickle: report what was found so far
        pass
    safe = ("collections.OrderedDict", "torch._utils.", "torch.FloatStorage", "torch.LongStorage", "torch.HalfStorage",
            "torch.IntStorage", "torch.BFloat16Storage", "torch.DoubleStorage", "torch.ByteStorage", "torch.BoolStorage")
    return list(dict.fromkeys(g for g in found if not g.startswith(safe)))


def read_torch_file(path: str | os.PathLike[str], *, keys: tuple[str, ...] = (), what: str = "PyTorch checkpoint") -> Any:
    """The one safe reader of ``.pt`` files: ``torch.load(weights_only=True)`` on the CPU, one-line errors.

    A pickle that would run code is refused (the error names what it would import), never executed, and no error
    suggests turning the safety off. ``keys``: top-level dict keys the file must have (``what`` names the
    expected kind in the error). Raises :class:`CheckpointError` for missing, empty, damaged or foreign files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with path.open("rb") as f:
        head = f.read(2)
    if not (head == b"PK" or head[:1] == b"\x80"):  # torch.save's zip archive, or a legacy pickle (protocol ≥ 2)
        raise CheckpointError(f"{path}: not a {what}: its first bytes are neither a zip archive nor a pickle")
    try:
        with warnings.catch_warnings():  # protocol notices from the weights-only unpickler are not the user's concern
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        imports = _pickle_imports(path)
        if not imports:  # nothing importable: a damaged or foreign file rather than a code-running pickle
            raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt (unsupported pickle data)") from None
        raise CheckpointError(
            f"{path}: refused: unpickling this file would run code (it imports {', '.join(imports[:SHOWN])}); only tensor "
            "checkpoints and bundles are accepted (convert NVIDIA .pkl networks to rosinality .pt on a trusted machine first)"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for damaged files
        reason = (str(exc).splitlines() or [""])[0].split(". ")[0][:100]
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt ({reason})") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        top = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a {what} (no {', '.join(missing[:SHOWN])}; top level: {top})")
    return obj


def _state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, Any]) -> str:
    """Empty if ``got`` has exactly the keys and shapes of ``expected``, else a one-line summary."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {list(got[k].shape) if isinstance(got[k], torch.Tensor) else type(got[k]).__name__} "
        f"(expected {list(expected[k].shape)})"
        for k in expected
        if k in got and (not isinstance(got[k], torch.Tensor) or got[k].shape != expected[k].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f", … {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOWN])}{more}")
    return "; ".join(parts)


class _SkipRandomInit(TorchFunctionMode):
    """While a module is built only to adopt a file's tensors: random initial weights are left uninitialised.

    ``torch.randn``/``rand`` give ``torch.empty`` and in-place ``uniform_``/``normal_`` do nothing, so the initial
    weights cost neither time nor touched memory (a forged config cannot make the loader fill gigabytes first), and
    nothing runs on the meta device, whose Python reference kernels import sympy and torch._dynamo (~2 s and
    ~100 MB for a decode-only process) and build ~10x slower.
    """

    _EMPTY = {torch.randn, torch.rand}
    _NOOP = {torch.Tensor.uniform_, torch.Tensor.normal_}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in self._EMPTY:
            return torch.empty(*args, **{k: v for k, v in kwargs.items() if k != "generator"})
        if func in self._NOOP:
            return args[0]
        return func(*args, **kwargs)


def _load_module(module_factory, state: dict[str, Any], path: Path, what: str) -> nn.Module:
    """Build (without random init, see :class:`_SkipRandomInit`), check the layout, then adopt the tensors."""
    with _SkipRandomInit():
        module = module_factory()
    expected = module.state_dict()
    state = {**{k: torch.zeros((), dtype=torch.long) for k in expected if k.endswith(COUNTER)}, **state}
    problem = _state_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"{path}: {what} does not match the expected layout: {problem}")
    cast = {}
    for k, v in state.items():
        want = expected[k].dtype
        if v.dtype != want and not (v.is_floating_point() and want.is_floating_point):
            raise CheckpointError(f"{path}: {what} tensor {k} has dtype {v.dtype}, expected {want}")
        cast[k] = v.to(want).contiguous()
    module.load_state_dict(cast, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _generator_config_from_state(sd: dict[str, Any], path: Path, what: str) -> GeneratorConfig:
    """Infer size, style_dim, n_mlp and channel multiplier from a rosinality state dict."""
    try:
        n_rgb = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
        n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
        style_dim = int(sd["style.1.weight"].shape[1])
        ch64 = int(sd["to_rgbs.3.conv.weight"].shape[2])  # the 64x64 ToRGB has 256·cm input channels
        return GeneratorConfig(size=2 ** (n_rgb + 2), style_dim=style_dim, n_mlp=n_mlp,
                               channel_multiplier=max(ch64 // 256, 1))
    except (KeyError, IndexError, AttributeError, ValueError, TypeError):
        raise CheckpointError(f"{path}: {what} is not a StyleGAN2 generator state dict (rosinality layout, 64..1024 px)") from None


def _load_generator(sd: dict[str, Any], path: Path, what: str, config: GeneratorConfig | None = None) -> Generator:
    cfg = config or _generator_config_from_state(sd, path, what)
    return _load_module(lambda: Generator(cfg), sd, path, what)


def _from_rosinality(ckpt: dict, path: Path) -> LoadedModel:
    sd = ckpt["g_ema"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' is not a state dict")
    g = _load_generator(sd, path, "generator 'g_ema'")
    w_avg = ckpt.get("latent_avg")
    if w_avg is not None and (not isinstance(w_avg, torch.Tensor) or w_avg.numel() != g.config.style_dim):
        raise CheckpointError(f"{path}: latent_avg should hold {g.config.style_dim} values")
    config = {"generator": generator_config_dict(g), "licence": NVIDIA_NC, "alignment": FFHQ_ALIGNMENT}
    return LoadedModel(g, None, config, "rosinality", w_avg=None if w_avg is None else w_avg.float().reshape(-1))


def _from_psp(ckpt: dict, path: Path, encoder_type: str | None) -> LoadedModel:
    sd, opts = ckpt["state_dict"], ckpt.get("opts") or {}
    if not isinstance(sd, dict) or not isinstance(opts, dict):
        raise CheckpointError(f"{path}: 'state_dict' / 'opts' are not dictionaries")
    # Released files predate some options: default what is missing, as pSp's inference script does.
    stated = opts.get("encoder_type")
    if stated is not None and (not isinstance(stated, str) or stated not in OPTS_ENCODER_TYPES):
        raise CheckpointError(f"{path}: unsupported encoder_type {str(stated)[:40]!r} (GradualStyleEncoder or Encoder4Editing)")
    if encoder_type is not None and encoder_type not in ENCODER_CLASSES:
        raise CheckpointError(f"{path}: unknown encoder type {encoder_type!r} (psp or e4e)")
    if stated is not None and encoder_type is not None and OPTS_ENCODER_TYPES[stated] != encoder_type:
        raise CheckpointError(f"{path}: the file's opts say encoder_type {stated!r} ({OPTS_ENCODER_TYPES[stated]}), "
                              f"not {encoder_type}; drop --encoder-type (it only fills in files whose opts lack it)")
    kind = encoder_type or OPTS_ENCODER_TYPES[stated or "GradualStyleEncoder"]
    if opts.get("learn_in_w", False):
        raise CheckpointError(f"{path}: learn_in_w pSp models (a single w) are not supported")
    size, input_nc = opts.get("stylegan_size" if kind == "e4e" else "output_size", 1024), opts.get("input_nc", 3)
    if type(input_nc) is not int or type(size) is not int:
        raise CheckpointError(f"{path}: opts input_nc / output size are not integers")
    if input_nc != 3:
        raise CheckpointError(f"{path}: input_nc={input_nc} (only RGB encoders are supported)")
    decoder = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    encoder = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    other = [k for k in sd if not k.startswith(("encoder.", "decoder."))]
    if other:
        raise CheckpointError(f"{path}: {len(other)} unexpected state_dict key(s) outside encoder./decoder.: {', '.join(other[:SHOWN])}")
    try:
        gcfg = GeneratorConfig(size=size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    g = _load_generator(decoder, path, "decoder", gcfg)
    n_styles = gcfg.n_latent
    latent_avg = ckpt.get("latent_avg")
    if opts.get("start_from_latent_avg", True):
        if not isinstance(latent_avg, torch.Tensor):
            raise CheckpointError(f"{path}: start_from_latent_avg is set but the file has no latent_avg")
        if tuple(latent_avg.shape) not in ((n_styles, 512), (512,), (1, 512)):
            raise CheckpointError(f"{path}: latent_avg has shape {list(latent_avg.shape)}, expected [{n_styles}, 512] or [512]")
        encoder["latent_avg"] = latent_avg.float().expand(n_styles, 512)
    else:
        encoder["latent_avg"] = torch.zeros(n_styles, 512)
    e = _load_module(lambda: ENCODER_CLASSES[kind](n_styles), encoder, path, f"{kind} encoder")
    config = {"generator": generator_config_dict(g), "encoder": encoder_config_dict(e),
              "licence": NVIDIA_NC, "alignment": FFHQ_ALIGNMENT}
    return LoadedModel(g, e, config, kind)


def _from_bundle(path: Path) -> LoadedModel:
    bundle = load_bundle(path)
    config = bundle.config
    if "generator" not in config:
        if "codec" in config:
            raise CheckpointError(f"{path}: a latent codec without a generator, not a face model: it codes W+ latents "
                                  "(`sganc-stream latents`); video commands need a face-model bundle")
        raise CheckpointError(f"{path}: bundle has no generator config")
    try:
        gcfg = GeneratorConfig.from_dict(config["generator"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad generator config ({exc})") from None
    g = _load_generator(bundle.part("generator"), path, "generator", gcfg)
    e = None
    if "encoder" in config:
        ecfg = config["encoder"]
        if not isinstance(ecfg, dict):
            raise CheckpointError(f"{path}: bad encoder config (not an object)")
        kind = ecfg.get("type")
        if kind == "fast":
            try:
                fcfg = FastEncoderConfig.from_dict(ecfg)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: bad fast encoder config ({exc})") from None
            factory = lambda: FastEncoder(fcfg)  # noqa: E731
        elif kind in ENCODER_CLASSES:
            factory = lambda: ENCODER_CLASSES[kind](gcfg.n_latent)  # noqa: E731
        else:
            raise CheckpointError(f"{path}: unknown encoder type {kind!r} (psp, e4e or fast)")
        e = _load_module(factory, bundle.part("encoder"), path, f"{kind} encoder")
        if e.n_latent != g.n_latent:
            raise CheckpointError(f"{path}: encoder gives {e.n_latent} W+ rows but the generator takes {g.n_latent}")
    extra = {k: v for k, v in bundle.tensors.items() if not k.startswith(("generator.", "encoder."))}
    model = LoadedModel(g, e, config, "bundle", extra_tensors=extra)
    model.__dict__["model_id"] = bundle.model_id  # the file's own id, whatever parts it holds
    return model


def load_checkpoint(path: str | os.PathLike[str], *, encoder_type: str | None = None) -> LoadedModel:
    """Load a rosinality / pSp / e4e ``.pt`` or a sganc-stream bundle.

    The encoder type of a pSp-family file is its ``opts['encoder_type']``; ``encoder_type`` ('psp' or 'e4e') only
    fills it in for files whose opts lack it, and a value contradicting the opts is a :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if is_bundle_file(path):
        return _from_bundle(path)
    return model_from_object(read_torch_file(path, what="model file (an sganc-stream bundle or a PyTorch checkpoint)"),
                             path, encoder_type=encoder_type)


def model_from_object(ckpt: Any, path: str | os.PathLike[str], *, encoder_type: str | None = None) -> LoadedModel:
    """A rosinality or pSp/e4e checkpoint already read by :func:`read_torch_file` → its models."""
    path = Path(path)
    if isinstance(ckpt, dict) and "g_ema" in ckpt:
        return _from_rosinality(ckpt, path)
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return _from_psp(ckpt, path, encoder_type)
    keys = ", ".join(map(str, list(ckpt)[:5])) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"{path}: not a StyleGAN2 (g_ema) or pSp/e4e (state_dict) checkpoint (top level: {keys})")
