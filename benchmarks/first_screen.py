"""Time to the first screen as a person sees it: a real terminal (tmux), the installed command.

    python benchmarks/first_screen.py [--runs N] [--store PATH]

Starts ``influence-explorer STORE.h5`` in a detached tmux session of 100 × 30, and polls
the pane (every 10 ms) until the overview's "Engine stages" heading is on screen; the
figure runs from the moment the command is typed (``send-keys``) to that capture. The
store is a finished synthetic 8 test × 40 train one (``--store`` to use another). Also
prints ``import tui.app`` alone in a fresh interpreter, and the 1-minute load average.
Needs tmux; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SESSION = "influence-first-screen"
MARKER = "Engine stages"
POLL_SECONDS = 0.01
TIMEOUT_SECONDS = 30.0
COLUMNS, LINES = 100, 30


def tmux(*args: str, capture: bool = False) -> str:
    result = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    return result.stdout if capture else ""


def first_screen_seconds(command: str) -> float:
    tmux("kill-session", "-t", SESSION)
    tmux("new-session", "-d", "-s", SESSION, "-x", str(COLUMNS), "-y", str(LINES), "bash --norc --noprofile")
    time.sleep(0.5)  # the shell's own start is not the app's
    start = time.monotonic()
    tmux("send-keys", "-t", SESSION, command, "Enter")
    try:
        while MARKER not in tmux("capture-pane", "-p", "-t", SESSION, capture=True):
            if time.monotonic() - start > TIMEOUT_SECONDS:
                raise TimeoutError(f"no {MARKER!r} on screen after {TIMEOUT_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)
        return time.monotonic() - start
    finally:
        tmux("send-keys", "-t", SESSION, "q")
        time.sleep(0.3)
        tmux("kill-session", "-t", SESSION)


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import tui.app; print(time.perf_counter() - t)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--store", type=Path)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed")
    command = shutil.which("influence-explorer") or str(Path(sys.executable).parent / "influence-explorer")
    with tempfile.TemporaryDirectory() as folder:
        store = args.store
        if store is None or not store.exists():
            sys.path.insert(0, str(REPO))
            from store.synthetic import make_synthetic_store

            store = make_synthetic_store(store or Path(folder) / "first.h5", n_test=8, n_train=40)
        screens = [first_screen_seconds(f"{command} {store}") for _ in range(args.runs)]
        imports = [import_seconds() for _ in range(args.runs)]
    print(f"{args.runs} runs, {COLUMNS}x{LINES} tmux, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    print(
        f"first screen (typed → overview on screen): median {statistics.median(screens):.2f} s, "
        f"min {min(screens):.2f}, max {max(screens):.2f}"
    )
    print(f"import tui.app (fresh interpreter): median {statistics.median(imports):.2f} s, max {max(imports):.2f}")


if __name__ == "__main__":
    main()
