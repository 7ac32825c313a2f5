"""`sganc-stream --version`: the package's version, the one in pyproject.toml, without importing the commands; `--help`
without torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_pyprojects_and_imports_no_command() -> None:
    code = ("import sys; from sganc_stream.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules, 'dlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"sganc-stream {version}", "False False"]


def test_help_lists_every_command_without_torch() -> None:
    code = ("import sys; from sganc_stream.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules, 'dlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    *help_lines, imported = proc.stdout.splitlines()
    assert imported == "False False"  # torch loads only for a command that runs a model
    listing = "\n".join(help_lines)
    for command in ("transcode", "transcode-dataset", "decode", "demo", "weights", "train-face-model"):
        assert f"    {command}" in listing
