"""ONNX Runtime backend (sganc_stream.onnx_runtime): same model id and integer states as PyTorch, floats within the
stated tolerances, a decode process without torch, one-line errors.

Tolerances: T⁻¹'s output within SPEC §7's bound (DECODED_RTOL / DECODED_ATOL: what any two conforming decoders may
differ by), checked on the conformance vectors; decoded pixels within MAX_LEVELS uint8 levels of PyTorch's (measured
here: at most 1 level, on about 0.002 % of pixels); T's output (encoder side, before the quantizer) within
FORWARD_RTOL in SPEC §7's measure |a − b| / (1 + |b|) (measured up to 2.1e-5: the proxy values are large, and an
encoder's bytes are exact only on one machine and runtime anyway, SPEC §7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sganc_stream.assets import default_face_model  # noqa: E402
from sganc_stream.bitstream.container import decode_container  # noqa: E402
from sganc_stream.bundle import load_bundle  # noqa: E402
from sganc_stream.cli import main  # noqa: E402
from sganc_stream.errors import CheckpointError, InputError  # noqa: E402
from sganc_stream.latent.model import DECODED_ATOL, DECODED_RTOL, load_latent_codec  # noqa: E402
from sganc_stream.latent.synthetic import synthetic_latents  # noqa: E402
from sganc_stream.models.recipe import tolerance_excess  # noqa: E402
from sganc_stream.onnx_runtime import graph_dir, load_onnx_codec, load_onnx_face_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "bitstream_spec" / "vectors"
MAX_LEVELS = 3
FORWARD_RTOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One graph cache for the module (exporting costs seconds), not the user's."""
    path = tmp_path_factory.mktemp("onnx-cache")
    old = os.environ.get("SGANC_CACHE_DIR")
    os.environ["SGANC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["SGANC_CACHE_DIR"]
    else:
        os.environ["SGANC_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def face(cache: Path):
    from sganc_stream.pipeline import load_face_model

    return load_face_model(default_face_model()), load_onnx_face_model(default_face_model(), quiet=True)


def test_numpy_bundle_has_the_torch_model_id() -> None:
    assert load_bundle(default_face_model(), "numpy").model_id == load_bundle(default_face_model()).model_id


def test_vectors_decode_to_exact_states_and_conforming_floats(cache: Path) -> None:
    """The conformance contract (SPEC §7) holds with T⁻¹ in ONNX Runtime."""
    from tests.test_conformance import CASES, MODEL_FILES, _states_and_floats, assert_floats_conform, model_file

    models = {f: load_onnx_codec(VECTORS / f, quiet=True) for f in MODEL_FILES}  # packed (bundle v2) ones included
    for f, model in models.items():
        assert model.flows == [] and model.model_id == load_latent_codec(VECTORS / f).model_id
    for case in CASES:
        states, decoded = _states_and_floats(models[model_file(case)], (VECTORS / f"{case}.sgnc").read_bytes())
        assert np.array_equal(states, np.load(VECTORS / f"{case}.states.npy")), case
        assert_floats_conform(decoded, np.load(VECTORS / f"{case}.decoded.npy"))


def test_flows_and_generator_agree_with_pytorch(face) -> None:
    torch_model, onnx_model = face
    assert onnx_model.model_id == torch_model.model_id and onnx_model.size == torch_model.size
    codec, ocodec = torch_model.codec, onnx_model.codec
    latents = synthetic_latents("walk", 6, codec.rows, codec.width, seed=3)
    for w in latents:
        y, oy = codec.to_proxy(w), ocodec.to_proxy(w)
        assert (np.abs(y - oy) / (1 + np.abs(y))).max() <= FORWARD_RTOL
        state = np.rint(y / codec.steps[1]).astype(np.int64)
        assert tolerance_excess(ocodec.from_state(state, 1), codec.from_state(state, 1), DECODED_RTOL, DECODED_ATOL) <= 0
    images, oimages = torch_model.render(latents), onnx_model.render(latents)
    assert oimages.dtype == np.uint8 and oimages.shape == images.shape == (6, torch_model.size, torch_model.size, 3)
    assert np.abs(images.astype(int) - oimages.astype(int)).max() <= MAX_LEVELS
    assert images.std() > 10  # real pictures, not a constant


def test_encoder_graph_agrees_and_its_stream_decodes_in_pytorch(cache: Path) -> None:
    """E in ONNX Runtime: W+ within FORWARD_RTOL of PyTorch's; the packets it codes decode in PyTorch to the W+ the
    ONNX encoder kept (the states come from the bytes alone, so runtimes may differ across a call)."""
    from sganc_stream.encoding import FrameEncoder
    from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
    from sganc_stream.pipeline import load_face_model

    path = default_face_model()
    torch_model, onnx_model = load_face_model(path), load_onnx_face_model(path, quiet=True, encode=True)
    assert onnx_model.align_size == torch_model.align_size
    crops = torch_model.render(synthetic_latents("walk", 5, torch_model.rows, torch_model.codec.width, seed=4))
    w, ow = torch_model.project(crops), onnx_model.project(crops)
    assert ow.shape == w.shape and (np.abs(w - ow) / (1 + np.abs(w))).max() <= FORWARD_RTOL
    params = StreamParams(g=2)
    encoder = FrameEncoder(onnx_model, params, align=False)
    decoder = LatentStreamDecoder(torch_model.codec, params)
    for crop in crops:
        coded = encoder.encode(crop)
        got = decoder.decode(coded.packet.type, coded.packet.payload)
        assert tolerance_excess(got, coded.recon_wplus, DECODED_RTOL, DECODED_ATOL) <= 0
    with pytest.raises(InputError, match="E takes uint8 crops"):
        onnx_model.project(crops[:, :8])
    with pytest.raises(CheckpointError, match="can decode but not encode"):
        load_onnx_face_model(path, quiet=True).project(crops)


def test_a_decoder_exports_no_encoder_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Loading for decoding on an empty cache exports T, T⁻¹ and G only; loading for encoding then adds E alone."""
    monkeypatch.setenv("SGANC_CACHE_DIR", str(tmp_path))
    model = load_onnx_face_model(default_face_model(), quiet=True)
    folder = graph_dir(model.model_id)
    assert sorted(p.name for p in folder.iterdir()) == ["flow_forward.onnx", "flow_inverse.onnx", "generator.onnx"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    load_onnx_face_model(default_face_model(), quiet=True, encode=True)
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert sorted(after) == ["encoder.onnx", "flow_forward.onnx", "flow_inverse.onnx", "generator.onnx"]
    assert all(after[n] == t for n, t in before.items())  # the graphs already there are not exported again


def test_decode_process_imports_no_torch(face, tmp_path: Path) -> None:
    """`decode --runtime onnx` with the graphs cached: the frames of the PyTorch decode within MAX_LEVELS, no torch."""
    from benchmarks.startup_memory import make_stream

    stream = tmp_path / "s.sgnc"
    make_stream(None, 4, stream)
    probe = ("import json, sys; from sganc_stream.cli import main; status = main(sys.argv[1:]); "
             f"json.dump('torch' in sys.modules, open({str(tmp_path / 'probe.json')!r}, 'w')); sys.exit(status)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", probe, "decode", "--quiet", "--runtime", "onnx", "--lossless",
                           str(stream), str(tmp_path / "onnx.mkv")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "probe.json").read_text()) is False
    from sganc_stream.decoding import FrameDecoder
    from sganc_stream.video import VideoReader

    torch_model, _ = face
    container = decode_container(stream.read_bytes())
    expected = FrameDecoder.for_header(torch_model, container.header).decode_batch(container.packets)
    with VideoReader(tmp_path / "onnx.mkv") as reader:
        got = np.stack(list(reader))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= MAX_LEVELS


def test_call_process_on_onnx_imports_no_torch(face) -> None:
    """What a call peer imports and loads with ``--runtime onnx`` (the default), graphs cached: no torch."""
    pytest.importorskip("aiortc")
    load_onnx_face_model(default_face_model(), quiet=True, encode=True)  # E's graph cached first (export needs torch)
    probe = ("import sys; from sganc_stream.rtc import cli, session; from sganc_stream.assets import default_face_model; "
             "from sganc_stream.onnx_runtime import load_onnx_face_model; "
             "m = load_onnx_face_model(default_face_model(), quiet=True, encode=True); "
             "print(m.encoder is not None, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]


def test_onnx_on_cuda_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sganc_stream", "decode", "--runtime", "onnx", "--device", "cuda",
                           str(tmp_path / "a.sgnc"), str(tmp_path / "b.mp4")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "runs on the CPU" in proc.stderr


def test_damaged_cached_graph_is_one_clear_error(face) -> None:
    _, onnx_model = face
    folder = graph_dir(onnx_model.model_id)
    good = (folder / "generator.onnx").read_bytes()
    try:
        (folder / "generator.onnx").write_bytes(good[: len(good) // 3])
        with pytest.raises(CheckpointError, match="unreadable ONNX graph.*delete"):
            load_onnx_face_model(default_face_model(), quiet=True)
    finally:
        (folder / "generator.onnx").write_bytes(good)


def test_codec_only_bundle_is_not_a_face_model(cache: Path) -> None:
    with pytest.raises(CheckpointError, match="not a face model"):
        load_onnx_face_model(VECTORS / "model.safetensors", quiet=True)


def test_without_onnxruntime_decode_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what Python does for a module that is not installed
    assert main(["decode", "--runtime", "onnx", "--model", str(tmp_path / "none.safetensors"), str(tmp_path / "x.sgnc"),
                 str(tmp_path / "d.mp4")]) == 2
    assert capsys.readouterr().err == ("sganc-stream decode: error: --runtime onnx needs onnxruntime, which is not "
                                       "installed: pip install 'sganc-stream[onnx]' (in a checkout: "
                                       "pip install -c requirements.lock -e '.[onnx]')\n")
    assert list(tmp_path.iterdir()) == []


def test_int8_encoder_is_calibrated_on_the_models_own_faces(cache: Path, tmp_path: Path) -> None:
    """E as int8 (the call's default): quantized once into the cache from faces the model renders from its own latent
    prior (deterministic for a seed, and varied); on real aligned crops of a clip G(E_int8(x)) stays within 0.01 median
    MS-SSIM of G(E(x)) (measured 0.999), and what it codes decodes on a float32 PyTorch receiver."""
    from face_data import CLIPS, STEADY_CLIP, shared_path
    from sganc_stream.encoding import FrameEncoder
    from sganc_stream.latent.codec import LatentStreamDecoder, StreamParams
    from sganc_stream.metrics import ms_ssim
    from sganc_stream.onnx_quantize import prior_faces
    from sganc_stream.pipeline import load_face_model
    from sganc_stream.video import read_frames

    path = default_face_model()
    fp32, int8 = (load_onnx_face_model(path, quiet=True, encode=True, encoder_precision=p) for p in ("fp32", "int8"))
    assert (fp32.encoder_precision, int8.encoder_precision) == ("fp32", "int8")
    assert (graph_dir(int8.model_id) / "encoder_int8.onnx").is_file()
    faces = prior_faces(int8.codec, int8.render, 3, seed=5)
    assert faces.shape == (3, 128, 128, 3) and np.array_equal(faces, prior_faces(int8.codec, int8.render, 3, seed=5))
    assert np.abs(faces[0].astype(int) - faces[1]).mean() > 5  # different faces, not one
    assert main(["align", "--size", "128", str(shared_path(CLIPS, STEADY_CLIP)), str(tmp_path / "crops")]) == 0
    crops = np.stack([np.asarray(f) for f in read_frames(tmp_path / "crops")][:8:2])
    a, b = fp32.render(fp32.project(crops)), int8.render(int8.project(crops))
    assert np.median(ms_ssim(a, b)) >= 0.99 and np.abs(fp32.project(crops) - int8.project(crops)).max() > 0
    params = StreamParams(g=2)
    encoder, decoder = FrameEncoder(int8, params, align=False), LatentStreamDecoder(load_face_model(path).codec, params)
    for crop in crops:
        coded = encoder.encode(crop)
        assert tolerance_excess(decoder.decode(coded.packet.type, coded.packet.payload), coded.recon_wplus,
                                DECODED_RTOL, DECODED_ATOL) <= 0
    with pytest.raises(InputError, match="encoder precision must be one of fp32, int8, got 'int4'"):
        load_onnx_face_model(path, quiet=True, encode=True, encoder_precision="int4")
