"""Every command that reads a file, run as a user runs it (a fresh process, so import-time warnings would show): a
missing input is one line on stderr, exit 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [
    ("inspect", "/nx.sgnc"),
    ("train-latent-codec", "--out", "{out}/m.safetensors", "/nx_dir"),
    ("decode", "--model", "/nx.safetensors", "/nx.sgnc", "{out}/o.mp4"),
    ("transcode", "--model", "/nx.safetensors", "/nx.mp4", "{out}/o.sgnc"),
    ("complete-bundle", "--faces", "/nx", "--out", "{out}/b.safetensors", "/nx.pt"),
    ("build-face-bundle", "--model", "/nx.pt", "--codec", "/nx.safetensors", "--out", "{out}/b.safetensors"),
    ("encode-face-clips", "--model", "/nx.pt", "--out", "{out}/latents", "/nx"),
    ("fit-context-tables", "/nx.safetensors", "/nx.npy", "--out", "{out}/o.safetensors"),
    ("train-face-model", "/nx", "--out", "{out}/run"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_missing_input_is_one_line_and_writes_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "sganc_stream", *(a.format(out=out) for a in args)],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"sganc-stream {args[0]}: error: ") and "/nx" in lines[0], lines
    assert not any(out.iterdir())


BAD_COMMAND_LINES = [
    ("sganc_stream.cli", "main", ["transcode", "in.mp4", "out.sgnc", "--mode", "foo"], "sganc-stream transcode"),
    ("sganc_stream.cli", "main", ["no-such-command"], "sganc-stream"),
    ("sganc_stream.cli", "main", ["demo", "--step", "x"], "sganc-stream demo"),
    ("sganc_stream.rtc.cli", "call_main", ["--runtime", "x"], "sganc-call"),
    ("sganc_stream.rtc.signaling", "signal_main", ["--port", "x"], "sganc-signal"),
]


@pytest.mark.parametrize("module,entry,argv,prog", BAD_COMMAND_LINES, ids=[" ".join(c[2]) for c in BAD_COMMAND_LINES])
def test_a_bad_command_line_is_one_line_naming_help(module: str, entry: str, argv: list[str], prog: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    with pytest.raises(SystemExit) as exc:
        getattr(importlib.import_module(module), entry)(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and err.endswith(f"(see {prog} --help)\n")
