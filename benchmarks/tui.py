"""The terminal UI on a 1,000 test × 25,000 train store: launch, redraws and memory, driven by Pilot.

    python benchmarks/tui.py [--store PATH] [--repeats N] [--scale notebook]

Builds the synthetic store in a temporary folder (about a minute; ``--scale notebook``: the
notebook's 14 layers and five λ, about 14 GB of scores before compression; ``--store`` reuses
one, creating it if missing), then runs the app in a fresh interpreter that never
imports torch and prints a table:

* first screen: from launching the child interpreter (and from ``import tui.app``) until
  the overview of the opened store is painted;
* redraws, on the ranking tab (every training review in a virtual table), median and
  worst of ``--repeats`` presses: "key → paint" posts the key event to the app and
  awaits Pilot's ``pause(0)`` until every widget has handled its messages and the
  screen is repainted; "pilot.press" is Pilot's own ``press`` + ``pause(0)``, which
  adds Pilot's idle detection (two ``wait_for_idle`` calls, at least 40 ms);
* the heatmap (pooling the whole matrix) and the λ report, both thread workers;
* peak resident memory of the child (``getrusage``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_TEST, N_TRAIN = 1_000, 25_000
SIZE = (200, 60)
DEFAULT_REPEATS = 20
TARGETS = {"first screen": 1.0, "redraw": 0.100, "peak RSS MB": 500}
# Key presses measured on the ranking tab: (label, keys pressed in turn).
REDRAWS = [
    ("change the test review (n)", ("n",)),
    ("sort the full ranking (o)", ("o",)),
    ("step λ ([ ])", ("right_square_bracket", "left_square_bracket")),
    ("toggle corruption (c)", ("c",)),
]
PILOT, DIRECT = "pilot.press", "key → paint"
REPO = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the tui package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)


def child(store: Path, repeats: int, launched: float) -> None:
    """Runs in the fresh interpreter (``launched``: the parent's wall clock at spawn); prints one JSON line."""
    import asyncio
    import resource

    import_started = time.perf_counter()
    from textual import events

    from tui.app import InfluenceApp

    async def measure() -> dict:
        results: dict = {}
        app = InfluenceApp(store=store)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0)
            assert app.data is not None and app.screen.query_one("#overview-summary").content
            results["first screen"] = time.time() - launched
            results["first screen after import"] = time.perf_counter() - import_started
            await pilot.press("3")
            await pilot.pause()
            for label, keys in REDRAWS:
                results[label] = {DIRECT: [], PILOT: []}
                for index in range(repeats):
                    key = keys[index % len(keys)]
                    before = time.perf_counter()
                    app.post_message(events.Key(key, None))
                    await pilot.pause(0)  # every widget has handled its messages; the screen is painted
                    await pilot.pause(0)  # ... including the messages those handlers posted
                    results[label][DIRECT].append(time.perf_counter() - before)
                for index in range(repeats):
                    key = keys[index % len(keys)]
                    before = time.perf_counter()
                    await pilot.press(key)
                    await pilot.pause(0)
                    results[label][PILOT].append(time.perf_counter() - before)
            assert app.screen.query_one("#ranking-table").row_count == N_TRAIN
            for label, key, done in (
                ("heatmap (pool 25M scores)", "4", lambda: app.screen.query_one("HeatmapCanvas").pooled is not None),
                ("λ report (every layer, every λ)", "7", lambda: app.variant in app.reports),
            ):
                before = time.perf_counter()
                await pilot.press(key)
                while not done():
                    await pilot.pause(0.01)
                results[label] = time.perf_counter() - before
        results["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["torch imported"] = "torch" in sys.modules
        return results

    print(json.dumps(asyncio.run(measure())))


# Score matrices per store: (layers, λ values); "notebook" is the notebook's 14 layers of
# DistilBERT-base and the five-value sweep, about 14 GB of float32 before compression.
SCALES = {"default": (3, (1e-5, 1e-3)), "notebook": (14, (1e-9, 1e-7, 1e-5, 1e-3, 1e-1))}


def build_store(path: Path, scale: str) -> float:
    from store.synthetic import make_synthetic_store

    n_layers, regularizations = SCALES[scale]
    started = time.perf_counter()
    make_synthetic_store(path, n_test=N_TEST, n_train=N_TRAIN, n_layers=n_layers, regularizations=regularizations)
    return time.perf_counter() - started


def report(results: dict, repeats: int) -> None:
    print(f"{'measure':<46} {'median':>9} {'worst':>9} {'target':>9}")
    print(
        f"{'first screen (from launching python)':<46} {results['first screen']:>8.3f}s {'':>9} "
        f"{TARGETS['first screen']:>8.1f}s"
    )
    print(f"{'first screen (from import tui.app)':<46} {results['first screen after import']:>8.3f}s")
    for label, _ in REDRAWS:
        for method in (DIRECT, PILOT):
            times = results[label][method]
            target = f"{TARGETS['redraw'] * 1000:>7.0f}ms" if method == DIRECT else ""
            print(
                f"{label + ', ' + method:<46} {statistics.median(times) * 1000:>7.1f}ms "
                f"{max(times) * 1000:>7.1f}ms {target:>9}"
            )
    for label in ("heatmap (pool 25M scores)", "λ report (every layer, every λ)"):
        print(f"{label:<46} {results[label]:>8.2f}s   (thread worker; the UI stays live)")
    print(f"{'peak RSS':<46} {results['peak RSS MB']:>7.0f}MB {'':>9} {TARGETS['peak RSS MB']:>7}MB")
    print(f"torch imported: {results['torch imported']}   ({repeats} presses per redraw, terminal {SIZE[0]}×{SIZE[1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="reuse (or create) the benchmark store here")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--scale", choices=sorted(SCALES), default="default", help="layers and λ values of the store")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeats, args.launched)
        return
    with tempfile.TemporaryDirectory() as folder:
        store = args.store or Path(folder) / "benchmark.h5"
        if not store.exists():
            n_layers, regularizations = SCALES[args.scale]
            shape = f"{N_TEST:,} × {N_TRAIN:,} × {n_layers} layers × {len(regularizations)} λ × 2 variants"
            print(f"building the {shape} store… ", end="", flush=True)
            print(f"{build_store(store, args.scale):.0f} s, {store.stat().st_size / 2**30:.1f} GiB")
        command = [sys.executable, __file__, "--child", str(store), "--repeats", str(args.repeats), "--launched"]
        output = subprocess.run([*command, repr(time.time())], cwd=REPO, capture_output=True, text=True, check=False)
        if output.returncode != 0:
            sys.exit(output.stderr)
        report(json.loads(output.stdout.strip().splitlines()[-1]), args.repeats)


if __name__ == "__main__":
    main()
