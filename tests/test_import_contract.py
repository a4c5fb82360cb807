"""The one-way street, by structure: what each package may reach through module-level imports.

``tui`` and ``store`` must open a store without torch; ``job`` (configuration, options,
progress, errors, the command line) is what they share with the engine, so it reaches
nothing heavy either. Imports inside functions are deferred on purpose (the UI starts the
engine in a worker) and do not count; ``tests/import_graph.py`` says exactly what does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from import_graph import ImportGraph

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("job", "store", "tui", "influence")
ENGINE = {"torch", "transformers", "datasets", "tokenizers", "safetensors", "influence"}
CONTRACTS = {
    "tui": ENGINE,
    "store": ENGINE | {"textual", "tui"},
    "job": ENGINE | {"textual", "rich", "h5py", "store", "tui"},
}


@pytest.mark.parametrize("package", sorted(CONTRACTS))
def test_no_module_reaches_what_its_package_must_not(package):
    graph = ImportGraph(ROOT, PACKAGES)
    modules = graph.modules(package)
    assert len(modules) > 3, modules
    violations = [v for module in modules for v in graph.violations(module, CONTRACTS[package])]
    assert not violations, "\n".join(str(v) for v in violations)


def test_the_engine_is_reached_where_it_should_be():
    """The walker sees real edges: the engine's modules do reach torch, the UI's app reaches the store."""
    graph = ImportGraph(ROOT, PACKAGES)
    assert {v.target for v in graph.violations("influence.pipeline", {"torch"})} == {"torch"}
    assert graph.violations("tui.app", {"store.reader"})


def test_the_walker_finds_a_chain_and_ignores_deferred_imports(tmp_path):
    """A module-level import of torch two modules away is found with its chain; one inside a
    function, under TYPE_CHECKING, or of a name that is not a module, is not."""
    package = tmp_path / "pkg"
    package.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\nfrom pkg.c import helper\n",
        "b.py": "try:\n    import torch.nn as nn\nexcept ImportError:\n    nn = None\n",
        "c.py": textwrap.dedent("""
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                import transformers
            def helper():
                import torch
        """),
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = ImportGraph(tmp_path, ("pkg",))
    [violation] = graph.violations("pkg.a", {"torch", "transformers"})
    assert violation.chain == ("pkg.a", "pkg.b", "torch")
    assert graph.violations("pkg.c", {"torch", "transformers"}) == []
