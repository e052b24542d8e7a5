"""The code base stays ruff-clean and ruff-formatted (the settings are in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", "npgpt", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_formatted():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run(
        [ruff, "format", "--check", "npgpt", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, "run `ruff format npgpt tests scripts`:\n" + r.stdout + r.stderr
