"""Test-wide settings and the small local models and datasets the pipeline tests load.

Everything is offline: HF_HUB_OFFLINE=1, and models and datasets are built here and
saved with save_pretrained / save_to_disk / plain files, so the real loading code runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# A private Hugging Face cache: datasets caches a local folder under its base name (a folder
# called imdb would later answer load_dataset("imdb") offline), and the tests must neither
# see nor fill the user's cache. Set before any test module imports datasets.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="influence-explorer-tests-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Demo models and UI stores go to a per-session temporary cache, never the user's."""
    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
