"""The Python the project says it needs is the Python its code needs: checked statically.

``requires-python`` in pyproject.toml is a promise to users on older interpreters (Ubuntu
22.04's is 3.10); vermin reads every module and names the first construct that needs a
newer one (``datetime.UTC``, 3.11, once slipped in and broke opening a store on 3.10).
"""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("job", "store", "tui", "influence", "tests", "benchmarks")
VERMIN = str(Path(sysconfig.get_path("scripts")) / "vermin")  # the checker's command, installed with the tests


def declared_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*">=\s*(\d+\.\d+)"', text, re.MULTILINE)
    assert match, "pyproject.toml declares no requires-python >= X.Y"
    return match.group(1)


def vermin(*paths: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            VERMIN,
            f"--target={declared_minimum()}-",
            "--violations",
            "--eval-annotations",
            "--no-tips",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def project_files() -> list[Path]:
    """The project's Python files; hidden folders (the benchmark environments) are not entered."""
    files = []
    for folder in SOURCES:
        for directory, subdirectories, names in os.walk(ROOT / folder):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            files += [Path(directory) / name for name in names if name.endswith(".py")]
    return files


@pytest.mark.slow  # reads every module of the project
def test_no_module_needs_a_newer_python_than_declared():
    result = vermin(*project_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_names_a_construct_of_a_newer_python(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("from datetime import UTC\n")
    result = vermin(newer)
    assert result.returncode != 0 and "datetime.UTC" in result.stdout
