"""The UI computes in a child process, with torch refused in its own: a real engine, a real crash, a resume.

Each case runs the app under Pilot in a fresh interpreter whose import system refuses torch and
transformers (``REFUSE_TORCH``); the engine's child process is a plain interpreter with both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from local_assets import corpus_rows, save_tiny_model, write_csv_folder

from job.config import DEMO, RunConfig
from store.reader import StoreReader

pytestmark = pytest.mark.slow  # fresh interpreters and a real engine
REPO = Path(__file__).resolve().parent.parent

PRELUDE = textwrap.dedent("""
    import asyncio, json, os, signal, sys, time
    from pathlib import Path

    class RefuseTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} was imported in the UI process")
            return None

    sys.meta_path.insert(0, RefuseTorch())
    from job.config import DEMO, RunConfig
    from tui.app import InfluenceApp

    config = RunConfig.from_dict(json.loads(sys.argv[1])).validate()

    async def until(pilot, predicate, timeout=240.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await pilot.pause(0.1)

    def engine_child():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    command = (entry / "cmdline").read_bytes().split(b"\\0")
                    parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                except OSError:
                    continue
                if b"influence.engine_process" in command and parent == str(os.getpid()):
                    return int(entry.name)
        return None
""")

COMPUTES = PRELUDE + textwrap.dedent("""
    async def main():
        app = InfluenceApp(config=config)
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: app.engine_state == "idle" and app.last_outcome is not None)
            print("outcome", app.last_outcome.status, app.last_outcome.summary)
            await pilot.press("3")
            await pilot.pause()
    asyncio.run(main())
    print("imported", sorted(m for m in ("torch", "transformers", "influence.pipeline") if m in sys.modules))
""")


def stopped_then_resumed(ready: str, stop: str, label: str, ended: str) -> str:
    """A script that waits until ``ready``, stops the engine with ``stop``, prints ``label`` and how the
    run ended, then resumes (r) and prints how the resume ended, once it is no longer ``ended``."""
    return PRELUDE + textwrap.dedent(f"""
        async def main():
            app = InfluenceApp(config=config)
            async with app.run_test(size=(120, 36)) as pilot:
                await until(pilot, lambda: app.live.stages and {ready}, timeout=60.0)
                {stop}
                await until(pilot, lambda: app.engine_state == "idle")
                print("{label}", app.last_outcome.status, app.last_outcome.summary)
                await pilot.press("r")
                await until(pilot, lambda: app.engine_state == "idle" and app.last_outcome.status != "{ended}")
                print("resumed", app.last_outcome.status)
        asyncio.run(main())
    """)


# At the child's first progress event, seconds before it could finish: killed (SIGKILL), so the UI
# says how the process ended; or cancelled with x (SIGINT), so the child stops after its batch and
# says so. Either way r then finishes the same store.
CRASHES_THEN_RESUMES = stopped_then_resumed(
    "engine_child() is not None", "os.kill(engine_child(), signal.SIGKILL)", "crash", "failed"
)
CANCELS_THEN_RESUMES = stopped_then_resumed(
    'app.engine_state == "running"', 'await pilot.press("x")', "cancel", "cancelled"
)


@pytest.fixture(scope="module")
def config_json(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("process")
    rows = corpus_rows(num_train=400, num_test=10)
    config = RunConfig(
        model=str(save_tiny_model(root / "model", rows)),
        dataset=str(write_csv_folder(root / "csv", rows)),
        num_train=400,
        num_test=8,
        batch_size=4,
        max_length=48,
        sweep=[1e-3],
        store=str(root / "store.h5"),
    )
    return json.dumps(config.to_dict())


def _run(script: str, config: str, store: Path) -> list[str]:
    store.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script, config], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_the_ui_computes_the_demo_in_a_child_and_never_imports_torch(tmp_path) -> None:
    """The demo (its model trained in the child, or found in the session's cache) on a subset."""
    store = tmp_path / "demo.h5"
    config = json.dumps(RunConfig(model=DEMO, dataset=DEMO, num_train=200, num_test=10, store=str(store)).to_dict())
    lines = _run(COMPUTES, config, store)
    assert lines[0].startswith("outcome finished analysis complete: "), lines
    assert lines[-1] == "imported []"
    with StoreReader(store) as reader:
        assert reader.completed_blocks().all() and reader.stages()["scores"].status == "done"


STOPPED_THEN_RESUMED = {
    "killed": (CRASHES_THEN_RESUMES, "crash failed the engine process killed by signal 9 without finishing"),
    "cancelled": (CANCELS_THEN_RESUMES, "cancel cancelled engine cancelled; resume continues from the store"),
}


@pytest.mark.parametrize("how", list(STOPPED_THEN_RESUMED))
def test_a_stopped_engine_is_shown_and_the_store_resumes(config_json, how) -> None:
    """Killed (SIGKILL) or cancelled (x): the UI says how the child ended, and r finishes the same store."""
    script, expected = STOPPED_THEN_RESUMED[how]
    store = Path(json.loads(config_json)["store"])
    lines = _run(script, config_json, store)
    assert lines[0] == expected, lines
    assert lines[1] == "resumed finished"
    with StoreReader(store) as reader:
        assert reader.completed_blocks().all()
