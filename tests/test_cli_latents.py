"""The latent CLI as a user runs it: separate processes, files on disk, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import torch
import pytest

from sganc_stream.bitstream.container import decode_container, encode_container
from sganc_stream.bitstream.packet import Packet
from sganc_stream.bundle import Bundle, load_bundle
from sganc_stream.cli import main
from sganc_stream.latent.synthetic import synthetic_latents

from conftest import TINY_ROWS, TINY_WIDTH


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sganc_stream", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def encoded(tiny_codec_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "in.npy", synthetic_latents("walk", 30, TINY_ROWS, TINY_WIDTH, seed=21))
    r = run_cli("latents", "encode", "--model", str(tiny_codec_path), "--g", "4", "--step", "0.5", "--recon", str(d / "recon.npy"), str(d / "in.npy"), str(d / "a.sgnc"))
    assert r.returncode == 0, r.stderr
    return d


def test_decode_equals_recon_and_reencode_is_byte_identical(encoded, tiny_codec_path):
    d = encoded
    assert run_cli("latents", "decode", "--model", str(tiny_codec_path), str(d / "a.sgnc"), str(d / "out.npy")).returncode == 0
    out = np.load(d / "out.npy")
    assert out.dtype == np.float32 and out.shape == (30, TINY_ROWS, TINY_WIDTH)
    assert np.array_equal(out, np.load(d / "recon.npy"))
    # a second encode in this (other) process gives the same bytes
    assert main(["latents", "encode", "--model", str(tiny_codec_path), "--g", "4", "--step", "0.5", str(d / "in.npy"), str(d / "b.sgnc")]) == 0
    assert (d / "a.sgnc").read_bytes() == (d / "b.sgnc").read_bytes()


def test_inspect_json_totals(encoded):
    r = run_cli("inspect", "--json", str(encoded / "a.sgnc"))
    info = json.loads(r.stdout)
    size = (encoded / "a.sgnc").stat().st_size
    assert info["total_bytes"] == size
    assert len(info["frames"]) == info["header"]["frames"] == 30
    assert {"index", "type", "bytes"} <= set(info["frames"][0])
    assert [f["type"] for f in info["frames"][:5]] == ["intra", "inter", "inter", "inter", "inter+residual"]
    assert info["header_bytes"] + sum(f["bytes"] for f in info["frames"]) < size <= info["header_bytes"] + sum(f["bytes"] for f in info["frames"]) + 12
    assert run_cli("inspect", str(encoded / "a.sgnc")).returncode == 0


def test_inspect_breaks_the_bits_down(encoded, tiny_codec_path, tmp_path):
    """inspect --json --model: packet types + framing + container sum to the file, parts / groups / rows to the
    payloads the per-frame list shows; without the stream's model only packet types; a wrong --model is one line."""
    size = (encoded / "a.sgnc").stat().st_size
    info = json.loads(run_cli("inspect", "--json", "--model", str(tiny_codec_path), str(encoded / "a.sgnc")).stdout)
    b = info["breakdown"]
    payload = 8 * sum(f["payload_bytes"] for f in info["frames"])
    assert b["total_bits"] == 8 * size
    assert b["container"]["header_bits"] == 8 * info["header_bytes"]
    assert b["container"]["header_bits"] + b["container"]["end_bits"] + sum(
        t["record_bits"] for t in b["by_packet_type"].values()) == 8 * size
    assert b["payload_bits"] == payload and b["framing_bits"] == 8 * sum(f["bytes"] for f in info["frames"]) - payload
    for label, t in b["by_packet_type"].items():
        assert t["record_bits"] == 8 * sum(f["bytes"] for f in info["frames"] if f["type"] == label)
    assert sum(v["bits"] for v in b["by_part"].values()) == sum(g["bits"] for g in b["by_group"]) == payload
    assert sum(r["bits"] for r in b["by_row"]) == payload and len(b["by_row"]) == TINY_ROWS
    assert b["by_part"]["residual"]["bits"] > 0 and b["transport"]["bits"] > 0
    text = run_cli("inspect", "--model", str(tiny_codec_path), str(encoded / "a.sgnc"))
    assert text.returncode == 0 and "where the bits go" in text.stdout and "part residual" in text.stdout
    # the shipped models did not make this stream: packet types only, and a note saying how to get the rest
    plain = json.loads(run_cli("inspect", "--json", str(encoded / "a.sgnc")).stdout)["breakdown"]
    assert "by_row" not in plain and "--model" in plain["by_row_note"]
    assert plain["by_packet_type"] == {k: {x: y for x, y in v.items()} for k, v in b["by_packet_type"].items()}
    from sganc_stream.assets import default_latent_codec

    _one_line_error(run_cli("inspect", "--json", "--model", str(default_latent_codec()), str(encoded / "a.sgnc")),
                    "stream was made with model")
    _one_line_error(run_cli("inspect", "--model", str(tmp_path / "none.safetensors"), str(encoded / "a.sgnc")),
                    "none.safetensors")


def _one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and needle in lines[0], r.stderr


def test_bad_inputs_give_one_line(encoded, tiny_codec_path, tmp_path):
    data = (encoded / "a.sgnc").read_bytes()
    (tmp_path / "trunc.sgnc").write_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.sgnc").write_bytes(bytes(bad))
    (tmp_path / "v9.sgnc").write_bytes(data[:4] + b"\x09" + data[5:])
    np.save(tmp_path / "wrong.npy", np.zeros((4, TINY_ROWS + 1, TINY_WIDTH), np.float32))
    m = ["--model", str(tiny_codec_path)]
    out = str(tmp_path / "o.npy")
    _one_line_error(run_cli("latents", "decode", *m, str(encoded / "in.npy"), out), "not an .sgnc file")
    _one_line_error(run_cli("latents", "decode", *m, str(tmp_path / "bad.sgnc"), out), "corrupted")
    _one_line_error(run_cli("latents", "decode", *m, str(tmp_path / "v9.sgnc"), out), "unknown bitstream version 9")
    _one_line_error(run_cli("latents", "encode", *m, str(tmp_path / "wrong.npy"), str(tmp_path / "w.sgnc")), "shape")
    _one_line_error(run_cli("latents", "encode", *m, "--step", "0.3", str(encoded / "in.npy"), str(tmp_path / "w.sgnc")), "preset")
    _one_line_error(run_cli("inspect", str(tmp_path / "missing.sgnc")), "no such file")
    _one_line_error(run_cli("latents", "encode", "--model", str(tmp_path / "none.safetensors"), str(encoded / "in.npy"),
                            str(tmp_path / "w.mp4")), "an SGNC stream's name must end in .sgnc")  # before the model
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "w.sgnc").exists()
    assert not (tmp_path / "w.mp4").exists()


def test_a_file_cut_short_decodes_its_complete_frames_with_a_warning(encoded, tiny_codec_path, tmp_path):
    """A partial download: `latents decode` and `inspect` read the whole packets before the cut, exit 0, and say on
    one stderr line how many of the declared frames the file holds."""
    data = (encoded / "a.sgnc").read_bytes()
    whole = decode_container(data)
    cut = whole.header_bytes + sum(whole.record_bytes[:12]) + 3  # 12 whole packets and 3 bytes of the 13th
    (tmp_path / "cut.sgnc").write_bytes(data[:cut])
    r = run_cli("latents", "decode", "--model", str(tiny_codec_path), str(tmp_path / "cut.sgnc"), str(tmp_path / "o.npy"))
    assert r.returncode == 0 and "12 frames decoded" in r.stdout, r.stderr
    assert r.stderr.strip().splitlines() == [f"sganc-stream latents: warning: {tmp_path / 'cut.sgnc'} ended early: no "
                                             "end packet; it holds 12 complete frames of the 30 its header declares "
                                             "(the file's checksum cannot be checked)"]
    assert np.array_equal(np.load(tmp_path / "o.npy"), np.load(encoded / "recon.npy")[:12])
    r = run_cli("inspect", "--json", "--model", str(tiny_codec_path), str(tmp_path / "cut.sgnc"))
    info = json.loads(r.stdout)
    assert r.returncode == 0 and "ended early" in r.stderr and info["complete"] is False and len(info["frames"]) == 12
    assert info["breakdown"]["frames"] == 12 and info["total_bytes"] == cut
    text = run_cli("inspect", str(tmp_path / "cut.sgnc")).stdout
    assert "file cut short: no end packet, 3 bytes of a partial last record" in text
    # a cut before the first whole packet leaves nothing to decode: one line, nothing written
    (tmp_path / "head.sgnc").write_bytes(data[:whole.header_bytes + 2])
    _one_line_error(run_cli("latents", "decode", "--model", str(tiny_codec_path), str(tmp_path / "head.sgnc"),
                            str(tmp_path / "h.npy")), "truncated (no end packet after 0 frames)")
    assert not (tmp_path / "h.npy").exists()
    # damage inside a kept packet is still an error, and it names the file and the frame
    bad = bytearray(data[:cut])
    bad[whole.header_bytes + sum(whole.record_bytes[:5]) - 3] ^= 0x5A  # in frame 4's payload
    (tmp_path / "bad.sgnc").write_bytes(bytes(bad))
    r = run_cli("latents", "decode", "--model", str(tiny_codec_path), str(tmp_path / "bad.sgnc"), str(tmp_path / "b.npy"))
    assert r.returncode == 2 and f"error: {tmp_path / 'bad.sgnc'}: frame 4: corrupted" in r.stderr, r.stderr
    assert not (tmp_path / "b.npy").exists()


def test_model_mismatch(encoded, tiny_codec_path, tmp_path):
    b = load_bundle(tiny_codec_path)
    key = next(k for k in b.tensors if k.endswith("diff.0.freqs"))
    t = b.tensors[key].int()
    t[0, 0] += 1
    t[0, 1] -= 1
    t = t.to(torch.uint16)
    Bundle({**b.tensors, key: t}, b.config).save(tmp_path / "other.safetensors")
    r = run_cli("latents", "decode", "--model", str(tmp_path / "other.safetensors"), str(encoded / "a.sgnc"), str(tmp_path / "o.npy"))
    _one_line_error(r, "stream was made with model")
    assert not (tmp_path / "o.npy").exists()


def test_inspect_a_bundle(tiny_codec_path, encoded, capsys):
    from pipeline_data import tiny_bundle

    assert main(["inspect", str(tiny_codec_path)]) == 0
    out = capsys.readouterr().out
    assert f"model id {load_bundle(tiny_codec_path).model_id}" in out and "latent codec only" in out
    assert "the encoder it was trained for is not recorded" in out and "licence   (none stated)" in out
    # the tiny codec's presets 0.25/0.5/1, its default step (the middle one) and its empirical residual tables
    assert "steps 0.25/0.5/1, default step 0.5, empirical residual tables (g 1, 2, 5, 10, 20, 40, 80)" in out
    face = tiny_bundle()
    assert main(["inspect", "--json", str(face)]) == 0
    info = json.loads(capsys.readouterr().out)
    bundle = load_bundle(face)
    assert info["model_id"] == bundle.model_id and info["use"] == "transcode and decode"
    assert set(info["parts"]) == {"generator", "encoder", "codec"}
    assert info["parts"]["encoder"]["encoder_id"] == bundle.encoder_id
    assert sum(p["stored_bytes"] for p in info["parts"].values()) < info["file_bytes"]
    assert info["parts"]["codec"]["stored_bytes"] < info["parts"]["codec"]["bytes"]  # packed (bundle format v2)
    r = run_cli("latents", "decode", "--model", str(face), str(encoded / "a.sgnc"), str(encoded / "o.npy"))
    _one_line_error(r, f"stream was made with model {load_bundle(tiny_codec_path).model_id[:16]}…")
    assert "--model" in r.stderr and "sganc-stream inspect" in r.stderr


def test_npy_header_claiming_terabytes_is_one_line_before_any_allocation(tiny_codec_path, tmp_path):
    """A 1 KB file whose header claims (100 000 000, 18, 512) float32 (3.35 TiB): refused from its size."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (100_000_000, TINY_ROWS, TINY_WIDTH)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    forged = tmp_path / "forged.npy"
    forged.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 1024)
    r = run_cli("latents", "encode", "--model", str(tiny_codec_path), str(forged), str(tmp_path / "w.sgnc"))
    assert r.returncode == 2
    _one_line_error(r, "header claims a float32 array of shape (100000000")
    assert not (tmp_path / "w.sgnc").exists()


def test_empirical_residual_table_option(encoded, tiny_codec_path, capsys):
    """--residual-table empirical writes a v3 stream that decodes to the recon; a period without a table is one line."""
    d = encoded
    assert main(["latents", "encode", "--model", str(tiny_codec_path), "--g", "5", "--residual-table", "empirical",
                 "--recon", str(d / "emp_recon.npy"), str(d / "in.npy"), str(d / "emp.sgnc")]) == 0
    assert main(["latents", "decode", "--model", str(tiny_codec_path), str(d / "emp.sgnc"), str(d / "emp_out.npy")]) == 0
    assert np.array_equal(np.load(d / "emp_out.npy"), np.load(d / "emp_recon.npy"))
    capsys.readouterr()
    assert main(["inspect", str(d / "emp.sgnc")]) == 0
    out = capsys.readouterr().out
    assert "bitstream v3" in out and "residual table empirical" in out
    r = run_cli("latents", "encode", "--model", str(tiny_codec_path), "--g", "7", "--residual-table", "empirical",
                str(d / "in.npy"), str(d / "bad.sgnc"))
    _one_line_error(r, "no empirical residual table for g = 7")
    assert r.returncode == 2 and not (d / "bad.sgnc").exists()


def test_v5_options(encoded, tiny_codec_path, capsys):
    """--decimation writes a v5 stream whose decode says how many frames were interpolated and inspect lists them;
    --inter-context temporal with a model without context tables, and bad values, are one line, nothing written."""
    d = encoded
    assert main(["latents", "encode", "--model", str(tiny_codec_path), "--g", "4", "--decimation", "2",
                 "--recon", str(d / "dec_recon.npy"), str(d / "in.npy"), str(d / "dec.sgnc")]) == 0
    assert main(["latents", "decode", "--model", str(tiny_codec_path), str(d / "dec.sgnc"), str(d / "dec_out.npy")]) == 0
    assert np.array_equal(np.load(d / "dec_out.npy"), np.load(d / "dec_recon.npy"))
    out = capsys.readouterr().out
    assert "30 frames decoded" in out and "(14 interpolated: decimation 2" in out
    assert main(["inspect", "--json", str(d / "dec.sgnc")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["header"]["version"] == 5 and info["header"]["decimation"] == 2
    assert info["interpolated_frames"] == list(range(1, 29, 2))
    assert main(["inspect", str(d / "dec.sgnc")]) == 0
    assert "bitstream v5" in (out := capsys.readouterr().out) and "decimation 2 (14 frames interpolated)" in out
    # a dead zone is an encoder choice: same bitstream version, and the decoder's output is the encoder's
    assert main(["latents", "encode", "--model", str(tiny_codec_path), "--mode", "closed", "--rounding-offset", "0.2",
                 "--recon", str(d / "dz_recon.npy"), str(d / "in.npy"), str(d / "dz.sgnc")]) == 0
    assert main(["latents", "decode", "--model", str(tiny_codec_path), str(d / "dz.sgnc"), str(d / "dz_out.npy")]) == 0
    assert np.array_equal(np.load(d / "dz_out.npy"), np.load(d / "dz_recon.npy"))
    assert decode_container((d / "dz.sgnc").read_bytes()).header.version == 2
    capsys.readouterr()
    for args, message in ((["--inter-context", "temporal"], "no temporal-context tables"),
                          (["--decimation", "0"], "decimation must be an integer between 1 and 16, got 0"),
                          (["--drift-damping", "2"], "drift damping must be between 0 and 1, got 2.0"),
                          (["--drift-damping", "0.5", "--mode", "closed"], "drift damping is for open mode"),
                          (["--rounding-offset", "0.7"], "rounding offset must be between 0 and 0.5, got 0.7")):
        r = run_cli("latents", "encode", "--model", str(tiny_codec_path), *args, str(d / "in.npy"), str(d / "bad5.sgnc"))
        _one_line_error(r, message)
        assert r.returncode == 2 and not (d / "bad5.sgnc").exists()


def test_decode_without_model_finds_the_shipped_model_that_made_the_stream(tmp_path):
    """`latents decode` without --model decodes a stream of the embedded face model (what `transcode` writes) as well
    as one of the synthetic latent codec, as `inspect` finds them."""
    from sganc_stream.assets import default_face_model
    from sganc_stream.latent.model import load_latent_codec

    face = load_latent_codec(default_face_model())
    np.save(tmp_path / "in.npy", synthetic_latents("walk", 4, face.rows, face.width, seed=2))
    r = run_cli("latents", "encode", "--model", str(default_face_model()), "--recon", str(tmp_path / "recon.npy"),
                str(tmp_path / "in.npy"), str(tmp_path / "a.sgnc"))
    assert r.returncode == 0, r.stderr
    r = run_cli("latents", "decode", str(tmp_path / "a.sgnc"), str(tmp_path / "out.npy"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "out.npy"), np.load(tmp_path / "recon.npy"))


def test_inspect_a_rate_controlled_temporal_stream_with_repeats(tiny_codec_path, tmp_path, capsys):
    """Bitstream v6 (rate control + temporal context, the commands' default with a fitted model and --target-kbps):
    a repeat has an empty payload and names no step (SPEC §4.3), so inspect lists the steps of the other face
    packets; a payload whose step cannot be read is one line naming the file and the frame."""
    lat = tmp_path / "lat"
    lat.mkdir()
    walk = synthetic_latents("walk", 20, TINY_ROWS, TINY_WIDTH, seed=5)
    np.save(lat / "1.npy", walk)
    ctx = tmp_path / "ctx.safetensors"
    assert main(["fit-context-tables", str(tiny_codec_path), str(lat), "--out", str(ctx), "--classes", "3", "--quiet"]) == 0
    np.save(tmp_path / "held.npy", walk[np.repeat(np.arange(10), 2)])  # every frame twice: repeats
    out = tmp_path / "v6.sgnc"
    assert main(["latents", "encode", "--model", str(ctx), "--target-kbps", "40", str(tmp_path / "held.npy"),
                 str(out)]) == 0
    c = decode_container(out.read_bytes())
    repeats = [p.frame for p in c.packets if p.type.is_frame and not p.payload]
    assert c.header.version == 6 and repeats
    capsys.readouterr()
    assert main(["inspect", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [f["index"] for f in info["frames"] if "step" not in f] == repeats
    assert sum(info["steps_used"].values()) == len(c.packets) - len(repeats)
    k = next(i for i, q in enumerate(c.packets) if i > 0 and q.payload)  # an inter packet's payload cut to 3 bytes
    p = c.packets[k]
    bad = tmp_path / "bad.sgnc"  # the file's check values recomputed: only the payload is wrong
    bad.write_bytes(encode_container(c.header, [*c.packets[:k], Packet(p.type, p.seq, p.frame, p.timestamp_ms,
                                                                       p.payload[:3]), *c.packets[k + 1:]]))
    r = run_cli("inspect", str(bad))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"sganc-stream inspect: error: {bad}: frame {p.frame}: corrupted payload: length is not a whole, non-zero "
        "number of 32-bit words"]
