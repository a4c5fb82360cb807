"""The store is h5py + numpy only: opening a store in the UI or exporting must never import torch or textual."""

from __future__ import annotations

import json

from test_store_support import run_child

FORBIDDEN = ("torch", "textual")
CODE = r"""
import json, pkgutil, sys
import store
modules = [m.name for m in pkgutil.iter_modules(store.__path__, "store.")]
for name in modules:
    __import__(name)
print(json.dumps({"modules": modules, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_store_imports_neither_torch_nor_textual():
    result = run_child(CODE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"store.writer", "store.reader", "store.analysis", "store.export", "store.synthetic"} <= set(
        report["modules"]
    )
    assert not set(FORBIDDEN) & set(report["loaded"]), report["loaded"]
