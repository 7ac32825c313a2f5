"""Where the official FFHQ checkpoints live, and fetching / verifying them.

The download locations are the links in the projects' own READMEs (pSp, e4e; the StyleGAN2 file is the
rosinality conversion those READMEs link). None of these projects publishes a SHA-256, so none is
written here: the first successful download records its hash in ``hashes.json`` beside the files
(trust on first use), and ``verify`` compares later copies against that record.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sganc_stream.errors import CheckpointError, InputError

TIMEOUT_S = 20.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsFile:
    name: str
    filename: str
    description: str
    gdrive_id: str
    source: str  # the page that publishes the link
    licence: str
    sha256: str | None = None  # only where a public source states it

    @property
    def page_url(self) -> str:
        return f"https://drive.google.com/file/d/{self.gdrive_id}/view"

    @property
    def download_url(self) -> str:
        return f"https://drive.usercontent.google.com/download?id={self.gdrive_id}&export=download&confirm=t"


NC = "NVIDIA Source Code License-NC (StyleGAN2 weights); non-commercial research use"
REGISTRY: dict[str, WeightsFile] = {w.name: w for w in (
    WeightsFile("stylegan2-ffhq", "stylegan2-ffhq-config-f.pt", "StyleGAN2 FFHQ 1024 generator, rosinality format (g_ema)",
                "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", "https://github.com/eladrich/pixel2style2pixel#pretrained-models", NC),
    WeightsFile("psp-ffhq-encode", "psp_ffhq_encode.pt", "pSp FFHQ StyleGAN inversion (encoder + decoder)",
                "1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0", "https://github.com/eladrich/pixel2style2pixel#pretrained-models", NC),
    WeightsFile("e4e-ffhq-encode", "e4e_ffhq_encode.pt", "e4e FFHQ inversion (encoder + decoder)",
                "1cUv_reLE6k3604or78EranS7XzuVMWeO", "https://github.com/omertov/encoder4editing#pretrained-models", NC),
)}


def weights_dir() -> Path:
    """``$SGANC_WEIGHTS_DIR`` or ``~/.cache/sganc-stream/weights``."""
    env = os.environ.get("SGANC_WEIGHTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sganc-stream" / "weights"


def lookup(name: str) -> WeightsFile:
    by_file = {w.filename: w for w in REGISTRY.values()}
    if name in REGISTRY:
        return REGISTRY[name]
    if name in by_file:
        return by_file[name]
    raise InputError(f"unknown weights {name!r} (known: {', '.join(REGISTRY)})")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _records_path(directory: Path) -> Path:
    return directory / "hashes.json"


def recorded_hashes(directory: Path) -> dict[str, str]:
    path = _records_path(directory)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: hash record is unreadable; delete it to re-record") from None
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record(directory: Path, filename: str, digest: str) -> None:
    records = recorded_hashes(directory)
    records[filename] = digest
    _records_path(directory).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


def expected_hash(entry: WeightsFile, directory: Path) -> tuple[str | None, str]:
    """The hash to check against and where it comes from ('published', 'recorded' or 'none')."""
    if entry.sha256:
        return entry.sha256, "published"
    digest = recorded_hashes(directory).get(entry.filename)
    return (digest, "recorded") if digest else (None, "none")


def verify(entry: WeightsFile, path: Path, directory: Path) -> tuple[str, str]:
    """Hash ``path`` and compare; returns (digest, basis). Mismatch raises :class:`CheckpointError`."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (run `sganc-stream weights fetch {entry.name}`)")
    digest = sha256_file(path)
    want, basis = expected_hash(entry, directory)
    if want is not None and digest != want:
        raise CheckpointError(f"{path}: sha256 {digest} does not match the {basis} {want}")
    return digest, basis


def fetch(entry: WeightsFile, directory: Path, timeout: float = TIMEOUT_S) -> tuple[Path, str, str]:
    """Download into ``directory`` (atomically), check or record its hash; returns (path, digest, basis)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / entry.filename
    request = urllib.request.Request(entry.download_url, headers={"User-Agent": "sganc-stream"})
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            if "text/html" in resp.headers.get("Content-Type", ""):
                raise CheckpointError(f"{entry.name}: the server sent a web page instead of the file (quota or "
                                      f"login wall); download it by hand from {entry.page_url} into {directory}")
            while chunk := resp.read(CHUNK):
                out.write(chunk)
        digest = sha256_file(Path(tmp))
        want, basis = expected_hash(entry, directory)
        if want is not None and digest != want:
            raise CheckpointError(f"{entry.name}: downloaded file has sha256 {digest}, not the {basis} {want}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"{entry.name}: download from {entry.download_url} failed ({reason}); "
                              f"no network? fetch it elsewhere from {entry.page_url}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    if basis == "none":
        _record(directory, entry.filename, digest)
        basis = "recorded now"
    return target, digest, basis
