"""The project's engine next to kronfluence and pyDVL on the same work, side by side.

Builds the workload once here (weights and padded batches, saved under
``benchmarks/.peers/``), so that every library sees the same numbers whatever its
transformers version initialises; creates a virtual environment per peer on first use;
then runs the engine and each peer in their own subprocesses, alternating, for several
rounds, and prints one table: fit, scoring and total seconds and peak memory (medians
of the rounds), the project's ratio to each peer, and the agreement of the influence
matrices. By default the table uses the project's exact Fisher, and a further run
checks the project's empirical-Fisher EK-FAC against kronfluence's, which computes the
same thing: they must agree to 1e-4 (relative Frobenius error).

    python benchmarks/peers.py --workload small
    python benchmarks/peers.py --workload base --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peer_common import (  # noqa: E402
    BATCHES_FILE,
    FISHERS,
    RESULT_SUFFIX,
    SCORES_SUFFIX,
    SPEC_FILE,
    THREADS,
    WEIGHTS_FILE,
)
from workloads import CAUSAL_LM, WORKLOADS, Workload, build_batches, build_model  # noqa: E402

from influence.layers import resolve_layers  # noqa: E402

WORK_ROOT = HERE / ".peers"
TORCH_PIN = "torch==2.13.0"  # the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build
READY_MARKER = ".requirements"  # written last: a half-built environment is rebuilt
DEFAULT_REGULARIZATION = 1e-5  # absolute damping λ, the notebook's value, for every library
EMPIRICAL_TOLERANCE = 1e-4  # project vs kronfluence, empirical Fisher: ‖Δ‖_F / ‖kronfluence‖_F
TRAIN_SEED, TEST_SEED = 1, 2  # as in engine.py
# What a DistilBertConfig needs to rebuild the architecture under transformers 4 or 5.
CONFIG_KEYS = (
    "vocab_size",
    "dim",
    "n_layers",
    "n_heads",
    "hidden_dim",
    "max_position_embeddings",
    "num_labels",
    "activation",
    "pad_token_id",
    "sinusoidal_pos_embds",
)
# What a LlamaConfig needs (a causal LM's workloads).
LM_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "pad_token_id",
    "tie_word_embeddings",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
LOG_TAIL_LINES = 30
GIB = 1024  # MiB per GiB
LABEL_WIDTH = 46  # the project's label names its options


@dataclass(frozen=True)
class Runner:
    """A library's runner script and the environment it runs in."""

    label: str
    script: str
    requirements: tuple[str, ...] = ()  # empty: the project's own environment
    uninstall: tuple[str, ...] = ()
    takes_fisher: bool = True
    options: tuple[str, ...] = ()  # passed to the runner script as they are


ENGINE = Runner("influence-explorer", "peer_engine.py")
PEERS = {
    # kronfluence depends on torchvision, which it never imports: pinned so that pip keeps
    # the CPU torch, then removed.
    "kronfluence": Runner(
        "kronfluence",
        "peer_kronfluence.py",
        (TORCH_PIN, "torchvision==0.28.0", "kronfluence==1.0.1", "transformers"),
        uninstall=("torchvision",),
    ),
    # pyDVL's torch.func per-example gradients fail on transformers 5's attention-mask code.
    "pydvl": Runner(
        "pyDVL", "peer_pydvl.py", (TORCH_PIN, "pydvl[influence]==0.10.0", "transformers<5"), takes_fisher=False
    ),
}


@dataclass(frozen=True)
class Measurement:
    library: str
    version: str
    curvature: str
    fit_s: float
    score_s: float
    peak_rss_mb: float
    torch: str
    transformers: str
    load_1min: float
    scores: np.ndarray

    @property
    def total_s(self) -> float:
        return self.fit_s + self.score_s


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds, and the last round's influence matrix."""

    label: str
    curvature: str
    fit_s: float
    score_s: float
    total_s: float
    peak_gib: float
    scores: np.ndarray


# ------------------------------------------------------------------ environments
def work_root() -> Path:
    """``benchmarks/.peers``, ignored by git through its own ``.gitignore``."""
    WORK_ROOT.mkdir(exist_ok=True)
    ignore = WORK_ROOT / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return WORK_ROOT


def environment(key: str, runner: Runner) -> str:
    """The Python that runs ``runner``: its own virtual environment, created on first use."""
    if not runner.requirements:
        return sys.executable
    venv = work_root() / f"venv-{key}"
    python = venv / "bin" / "python"
    marker = venv / READY_MARKER
    wanted = "\n".join(runner.requirements)
    if marker.exists() and marker.read_text() == wanted:
        return str(python)
    log = work_root() / f"venv-{key}.log"
    print(f"creating the {runner.label} environment in {venv} (first use; pip output in {log})", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    pip = [str(python), "-m", "pip"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        pip + ["install", TORCH_PIN],  # first and alone, so that nothing later picks another build
        pip + ["install", *runner.requirements],
    ]
    if runner.uninstall:
        steps.append(pip + ["uninstall", "-y", *runner.uninstall])
    with log.open("w") as output:
        for step in steps:
            if subprocess.run(step, stdout=output, stderr=subprocess.STDOUT).returncode != 0:
                sys.exit(f"failed: {' '.join(step)}\n{tail(log)}")
    marker.write_text(wanted)
    return str(python)


def tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


# --------------------------------------------------------------------- workload
def export_workload(workload: Workload) -> tuple[Path, dict]:
    """Weights, batches and the exact tracked module names, built once in this environment."""
    work = work_root() / workload.name
    work.mkdir(exist_ok=True)
    model = build_model(workload)
    layers = resolve_layers(model, workload.tracked)
    keys = LM_CONFIG_KEYS if workload.kind == CAUSAL_LM else CONFIG_KEYS
    spec = {
        "workload": asdict(workload),
        "config": {key: getattr(model.config, key) for key in keys},
        "tracked": [layer.name for layer in layers],
        "tracked_parameters": sum(layer.num_parameters for layer in layers),
    }
    torch.save(model.state_dict(), work / WEIGHTS_FILE)
    batches = {
        "train": build_batches(workload, workload.train, TRAIN_SEED),
        "test": build_batches(workload, workload.test, TEST_SEED),
    }
    torch.save(batches, work / BATCHES_FILE)
    (work / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    return work, spec


def engine_runner(eigen_precision: str, cache_mib: Optional[int], query_mib: Optional[int], pairwise: bool) -> Runner:
    """The project's runner with its options, named after them in the table."""
    options, notes = ("--eigen-precision", eigen_precision), []
    if eigen_precision != "float64":
        notes.append(f"{eigen_precision} eigh")
    if cache_mib is not None:
        options += ("--cache-mib", str(cache_mib))
        notes.append(f"cache {cache_mib} MiB")
    if query_mib is not None:
        options += ("--query-mib", str(query_mib))
        notes.append(f"queries {query_mib} MiB at a time")
    if pairwise:
        options += ("--pairwise",)
        notes.append("pairwise loop")
    label = ENGINE.label + (f" ({', '.join(notes)})" if notes else "")
    return Runner(label, ENGINE.script, options=options)


# ----------------------------------------------------------------------- running
def run(python: str, runner: Runner, work: Path, name: str, fisher: str, regularization: float) -> Measurement:
    """One fresh process, so that its peak memory is this library's alone."""
    out = work / name
    command = [
        python,
        str(HERE / runner.script),
        "--work",
        str(work),
        "--out",
        str(out),
        "--regularization",
        repr(regularization),
    ]
    if runner.takes_fisher:
        command += ["--fisher", fisher]
    command += list(runner.options)
    env = {**os.environ, **{variable: str(THREADS) for variable in THREAD_VARIABLES}}
    log = out.with_suffix(".log")
    with log.open("w") as output:
        if subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env).returncode != 0:
            sys.exit(f"{runner.label} failed:\n{tail(log)}")
    result = json.loads(out.with_suffix(RESULT_SUFFIX).read_text())
    keys = ("library", "version", "curvature", "fit_s", "score_s", "peak_rss_mb", "torch", "transformers", "load_1min")
    return Measurement(**{k: result[k] for k in keys}, scores=np.load(out.with_suffix(SCORES_SUFFIX)))


def rounds(
    runners: dict[str, tuple[str, Runner]], work: Path, count: int, fisher: str, regularization: float
) -> dict[str, list[Measurement]]:
    """Every library once per round; the order rotates so that none always runs first."""
    keys = list(runners)
    results: dict[str, list[Measurement]] = {key: [] for key in keys}
    for index in range(count):
        order = keys[index % len(keys) :] + keys[: index % len(keys)]
        for key in order:
            python, runner = runners[key]
            name = f"round{index + 1}-{key}" + (f"-{fisher}" if runner.takes_fisher else "")
            measurement = run(python, runner, work, name, fisher, regularization)
            results[key].append(measurement)
            print(
                f"round {index + 1}/{count}: {runner.label:<20} fit {measurement.fit_s:8.2f} s  "
                f"score {measurement.score_s:8.2f} s  peak {measurement.peak_rss_mb / GIB:5.2f} GiB  "
                f"load {measurement.load_1min:.1f}",
                file=sys.stderr,
            )
    return results


def summarise(label: str, measurements: Sequence[Measurement]) -> Summary:
    last = measurements[-1]
    return Summary(
        label=f"{label} {last.version}",
        curvature=last.curvature,
        fit_s=statistics.median(m.fit_s for m in measurements),
        score_s=statistics.median(m.score_s for m in measurements),
        total_s=statistics.median(m.total_s for m in measurements),
        peak_gib=statistics.median(m.peak_rss_mb for m in measurements) / GIB,
        scores=last.scores,
    )


# ---------------------------------------------------------------------- agreement
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson on ranks; ties between float scores are negligible here."""
    return pearson(np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel())))


@dataclass(frozen=True)
class EmpiricalCheck:
    """The project's empirical-Fisher EK-FAC against kronfluence's: the same formula, so the
    only difference allowed is float32 rounding (near-zero entries differ relatively more,
    hence the Frobenius norm)."""

    ours: Measurement
    theirs: Measurement

    @property
    def frobenius_relative(self) -> float:
        return float(np.linalg.norm(self.ours.scores - self.theirs.scores) / np.linalg.norm(self.theirs.scores))

    @property
    def max_relative_to_max(self) -> float:
        return float(np.abs(self.ours.scores - self.theirs.scores).max() / np.abs(self.theirs.scores).max())

    @property
    def passed(self) -> bool:
        return self.frobenius_relative <= EMPIRICAL_TOLERANCE

    def report(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"empirical-Fisher EK-FAC, project vs kronfluence (use_empirical_fisher=True), same λ: "
            f"‖Δ‖/‖kronfluence‖ = {self.frobenius_relative:.2e}, max|Δ|/max|kronfluence| = "
            f"{self.max_relative_to_max:.2e}, Pearson {pearson(self.ours.scores, self.theirs.scores):.8f}: "
            f"{verdict} (≤ {EMPIRICAL_TOLERANCE:g}); "
            f"totals {self.ours.total_s:.2f} s vs {self.theirs.total_s:.2f} s"
        )


# ------------------------------------------------------------------------ output
def print_table(project: Summary, peers: Sequence[Summary]) -> None:
    """Medians per library; for each peer, the project's ratio to it (below 1: the project
    is faster or smaller) and the agreement of the two influence matrices."""
    left = f"{'library':<{LABEL_WIDTH}}{'curvature':<11}{'fit s':>8}{'score s':>9}{'total s':>9}{'peak GiB':>10}"
    print(f"{'':<{len(left)}}   {'project / peer':^27}   {'agreement':^18}")
    print(f"{left}   {'fit':>6}{'score':>7}{'total':>7}{'peak':>7}   {'Pearson':>8}{'Spearman':>10}")
    for row in (project, *peers):
        line = (
            f"{row.label:<{LABEL_WIDTH}}{row.curvature:<11}{row.fit_s:>8.2f}{row.score_s:>9.2f}{row.total_s:>9.2f}"
            f"{row.peak_gib:>10.2f}"
        )
        if row is not project:
            line += (
                f"   {project.fit_s / row.fit_s:>6.2f}{project.score_s / row.score_s:>7.2f}"
                f"{project.total_s / row.total_s:>7.2f}{project.peak_gib / row.peak_gib:>7.2f}"
                f"   {pearson(project.scores, row.scores):>8.4f}{spearman(project.scores, row.scores):>10.4f}"
            )
        print(line)


def print_header(
    workload: Workload, spec: dict, count: int, regularization: float, measurements: dict[str, list[Measurement]]
) -> None:
    print(
        f"workload {workload.name}: {'Llama causal LM' if workload.kind == CAUSAL_LM else 'DistilBERT classifier'}, "
        f"dim {workload.dim}, {workload.layers} layers, "
        f"hidden {workload.hidden}, seq {workload.seq} (padded from random lengths), "
        f"{workload.train} train x {workload.test} test, batch {workload.batch}; "
        f"{spec['tracked_parameters']:,} tracked parameters ({', '.join(workload.tracked)})"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {THREADS} threads per library; "
        f"damping λ = {regularization:g} (absolute) for all; medians of {count} round(s), libraries alternating"
    )
    for results in measurements.values():
        last = results[-1]
        print(f"  {last.library} {last.version}: torch {last.torch}, transformers {last.transformers}")
    loads = [m.load_1min for results in measurements.values() for m in results]
    print(
        f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} "
        f"(shared machine: above {THREADS} means other work competed for the cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, among {', '.join(PEERS)}")
    parser.add_argument(
        "--fisher",
        choices=FISHERS,
        default=None,
        help="the project's Fisher for the table (kronfluence follows); default: exact, "
        "plus the empirical-Fisher check against kronfluence",
    )
    parser.add_argument("--regularization", type=float, default=DEFAULT_REGULARIZATION)
    parser.add_argument(
        "--eigen-precision",
        choices=("float64", "float32"),
        default="float64",
        help="the project's eigendecompositions (float32: checked, redone in float64 if inaccurate)",
    )
    parser.add_argument(
        "--cache-mib",
        type=int,
        default=None,
        help="the project's token cache between passes (0: lean memory, every pass recomputed)",
    )
    parser.add_argument(
        "--query-mib",
        type=int,
        default=None,
        help="the project's test gradients held at once (the test set scored in chunks that fit)",
    )
    parser.add_argument(
        "--pairwise",
        action="store_true",
        help="the project scores batch against batch in a loop (the old README's way) instead of in one call",
    )
    args = parser.parse_args()
    peer_keys = [key.strip().lower() for key in args.peers.split(",") if key.strip()]
    unknown = sorted(set(peer_keys) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}: choose among {', '.join(PEERS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    workload = WORKLOADS[args.workload]
    engine = engine_runner(args.eigen_precision, args.cache_mib, args.query_mib, args.pairwise)
    runners = {"engine": (environment("engine", engine), engine)}
    runners.update({key: (environment(key, PEERS[key]), PEERS[key]) for key in peer_keys})
    work, spec = export_workload(workload)
    fisher = args.fisher or "exact"
    measurements = rounds(runners, work, args.rounds, fisher, args.regularization)

    check: Optional[EmpiricalCheck] = None
    if "kronfluence" in runners and args.fisher != "exact":
        if fisher == "empirical":
            check = EmpiricalCheck(measurements["engine"][-1], measurements["kronfluence"][-1])
        else:
            empirical = {key: runners[key] for key in ("engine", "kronfluence")}
            extra = rounds(empirical, work, 1, "empirical", args.regularization)
            check = EmpiricalCheck(extra["engine"][0], extra["kronfluence"][0])

    print_header(workload, spec, args.rounds, args.regularization, measurements)
    project = summarise(engine.label, measurements["engine"])
    print_table(project, [summarise(runners[key][1].label, measurements[key]) for key in peer_keys])
    if check is not None:
        print(check.report())
        if not check.passed:
            sys.exit(1)


if __name__ == "__main__":
    main()
