"""Opening a store never needs torch: checked in fresh interpreters, one with a torch that cannot import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters

REPO = Path(__file__).resolve().parent.parent

# Opens a synthetic store, visits every tab (heatmap and λ report included) and the pair view,
# then prints which engine modules got imported.
SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    import tui.app
    from store.synthetic import make_synthetic_store
    from tui.app import InfluenceApp

    path = make_synthetic_store(Path(sys.argv[1]) / "s.h5", n_test=6, n_train=40)

    async def main():
        app = InfluenceApp(store=path)
        async with app.run_test(size=(100, 30)) as pilot:
            for key in "1234567":
                await pilot.press(key)
                for worker in list(app.workers):
                    await worker.wait()
                await pilot.pause()
            assert app.reports and app.screen.query_one("HeatmapCanvas").pooled is not None
            await pilot.press("3", "enter")
            assert type(app.screen).__name__ == "PairScreen", app.screen

    asyncio.run(main())
    print(sorted(name for name in ("torch", "transformers", "influence.pipeline") if name in sys.modules))
""")


def _run(tmp_path: Path, extra_path: list[Path]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in [*extra_path, REPO]))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_opening_a_store_and_every_view_leaves_torch_unimported(tmp_path) -> None:
    result = _run(tmp_path, [])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_view_works_when_torch_fails_to_import(tmp_path) -> None:
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text('raise ImportError("this torch is broken on purpose")\n')
    check = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env=dict(os.environ, PYTHONPATH=str(broken)),
        capture_output=True,
        text=True,
    )
    assert "broken on purpose" in check.stderr  # the fake torch really comes first
    result = _run(tmp_path, [broken])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
