"""Official checkpoint registry: download, trust-on-first-use hashes, verification, offline failure."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from sganc_stream.errors import CheckpointError, InputError
from sganc_stream.models import weights as W


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, content_type: str = "application/octet-stream"):
        super().__init__(data)
        self.headers = {"Content-Type": content_type}


def serve(monkeypatch: pytest.MonkeyPatch, data: bytes, content_type: str = "application/octet-stream") -> None:
    monkeypatch.setattr(W.urllib.request, "urlopen", lambda req, timeout: FakeResponse(data, content_type))


def test_registry_names_the_published_sources() -> None:
    assert {w.filename for w in W.REGISTRY.values()} == {"stylegan2-ffhq-config-f.pt", "psp_ffhq_encode.pt", "e4e_ffhq_encode.pt"}
    assert W.lookup("psp_ffhq_encode.pt") is W.REGISTRY["psp-ffhq-encode"]
    for entry in W.REGISTRY.values():
        assert entry.gdrive_id in entry.download_url and entry.source.startswith("https://github.com/")
    with pytest.raises(InputError, match="unknown weights"):
        W.lookup("stylegan3")


def test_first_download_records_hash_then_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = W.REGISTRY["e4e-ffhq-encode"]
    serve(monkeypatch, b"weights v1")
    path, digest, basis = W.fetch(entry, tmp_path)
    assert path.read_bytes() == b"weights v1" and basis == "recorded now"
    assert digest == hashlib.sha256(b"weights v1").hexdigest()
    assert W.recorded_hashes(tmp_path) == {"e4e_ffhq_encode.pt": digest}
    assert W.verify(entry, path, tmp_path) == (digest, "recorded")
    path.write_bytes(b"weights v2")  # a changed copy no longer verifies
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        W.verify(entry, path, tmp_path)
    serve(monkeypatch, b"weights v2")  # nor is a changed download accepted, and the old file stays
    with pytest.raises(CheckpointError, match="not the recorded"):
        W.fetch(entry, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e4e_ffhq_encode.pt", "hashes.json"]


def test_html_instead_of_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, b"<html>quota exceeded</html>", "text/html; charset=utf-8")
    with pytest.raises(CheckpointError, match="web page instead of the file"):
        W.fetch(W.REGISTRY["psp-ffhq-encode"], tmp_path)
    assert not (tmp_path / "psp_ffhq_encode.pt").exists()


def test_no_network_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(req, timeout):
        raise W.urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(W.urllib.request, "urlopen", refuse)
    with pytest.raises(CheckpointError, match="download from .* failed") as err:
        W.fetch(W.REGISTRY["stylegan2-ffhq"], tmp_path)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_weights_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGANC_WEIGHTS_DIR", str(tmp_path))
    assert W.weights_dir() == tmp_path
