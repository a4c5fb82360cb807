"""The ``influence-explorer`` command: the terminal UI by default, ``--export`` for batch jobs.

Import hygiene is part of the contract: this module imports neither torch nor textual at
module level. ``--export`` pulls in the engine (torch) but never textual; opening an
existing store pulls in the UI (textual) but never torch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from job.channel import CLI_MODULE, WORLD_SIZE_ENV, torchrun
from job.config import DEFAULT_REGULARIZATION, DEFAULT_SWEEP, PRESETS, RunConfig
from job.errors import EXIT_USAGE, UserError
from job.options import AUTOCAST_DTYPES, EIGEN_PRECISIONS, FISHER_KINDS, MODES, TASKS, EngineOptions
from job.sizes import parse_size

PROG = "influence-explorer"
STORE_SUFFIXES = (".h5", ".hdf5")
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Which training examples made a fine-tuned language model (a classifier or a causal LM) "
        "say what it says: EK-FAC influence.",
        epilog="With no arguments the terminal UI opens on the built-in demo. "
        "STORE.h5 opens an existing analysis (no torch needed).",
    )
    parser.add_argument("store_file", nargs="?", metavar="STORE.h5", help="open an existing store in the UI")
    parser.add_argument(
        "--export", metavar="OUT/", help="headless: compute, then write the store and CSV/JSON tables to OUT/"
    )
    data = parser.add_argument_group("model and data")
    data.add_argument(
        "--model", help="hub id or local folder; 'demo' = the built-in classifier, 'demo-lm' = the built-in causal LM"
    )
    data.add_argument("--dataset", help="hub id, save_to_disk folder, CSV/JSON/JSONL/Parquet file or folder; 'demo'")
    data.add_argument("--text-column")
    data.add_argument("--label-column")
    data.add_argument("--train-split")
    data.add_argument("--test-split")
    data.add_argument("--num-train", type=int, metavar="N")
    data.add_argument("--num-test", type=int, metavar="N")
    data.add_argument("--seed", type=int)
    data.add_argument("--max-length", type=int, metavar="L")
    data.add_argument("--batch-size", type=int, metavar="B")
    data.add_argument(
        "--max-new-tokens", type=int, metavar="N", help="a causal LM's greedy completion of each query (default 16)"
    )
    data.add_argument("--trust-remote-code", action="store_true", default=None)
    data.add_argument("--corrupt", metavar="all|FRACTION|none", help="flip all or a seeded fraction of training labels")
    engine = parser.add_argument_group("influence")
    engine.add_argument(
        "--layers", type=_name_list, metavar="NAMES", help="comma-separated module names or glob patterns"
    )
    engine.add_argument(
        "--task", choices=TASKS, help="what the model is (default: as its config says: *ForCausalLM is causal-lm)"
    )
    engine.add_argument("--fisher", choices=FISHER_KINDS, help="default: exact for classifiers, sampled for causal LMs")
    engine.add_argument("--mode", choices=MODES)
    engine.add_argument(
        "--query-rank",
        type=int,
        metavar="R",
        help="keep each test gradient at rank R per layer (a truncated SVD): less memory, R times the scoring work",
    )
    engine.add_argument(
        "--autocast", choices=AUTOCAST_DTYPES, help="forward passes in bf16 (factors and scores stay float32)"
    )
    engine.add_argument(
        "--eigen-precision",
        choices=EIGEN_PRECISIONS,
        help="float32: faster eigendecompositions, each checked and redone in float64 when not accurate",
    )
    engine.add_argument("--regularization", type=float, metavar="λ", help=f"default {DEFAULT_REGULARIZATION:g}")
    engine.add_argument(
        "--sweep", type=_float_list, metavar="λ1,λ2,...", help=f"default {','.join(f'{v:g}' for v in DEFAULT_SWEEP)}"
    )
    run = parser.add_argument_group("run")
    run.add_argument("--store", metavar="PATH", help="the HDF5 store (default OUT/influence.h5 with --export)")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--preset", choices=sorted(PRESETS), help="the pyDVL notebook's setup")
    run.add_argument(
        "--checkpoint-every",
        type=float,
        dest="checkpoint_seconds",
        metavar="SECONDS",
        help="save partial factor sums this often (default 30)",
    )
    run.add_argument(
        "--memory-budget",
        type=_size,
        metavar="SIZE",
        help="memory for test gradients and cached training batches, e.g. 512MB or 8GiB; queries are "
        "processed in chunks that fit (default: three quarters of what is free on the device)",
    )
    run.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="run the engine on N processes (one per GPU) through torchrun; "
        "torchrun --nproc-per-node N -m influence --export OUT does the same by hand",
    )
    run.add_argument("--top-k", type=int, default=10, metavar="K", help="pairs per test example in the exported tables")
    return parser


CONFIG_OPTIONS = (
    "model",
    "dataset",
    "text_column",
    "label_column",
    "train_split",
    "test_split",
    "num_train",
    "num_test",
    "seed",
    "max_length",
    "batch_size",
    "max_new_tokens",
    "trust_remote_code",
    "layers",
    "regularization",
    "sweep",
    "store",
    "device",
    "checkpoint_seconds",
    "memory_budget",
    "nproc",
    "export",
)
ENGINE_OPTIONS = ("task", "fisher", "mode", "autocast", "eigen_precision", "query_rank")  # fields of EngineOptions


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then the preset, then what was given explicitly."""
    values: dict = {}
    if args.preset:
        values.update(PRESETS[args.preset])
        values["preset"] = args.preset
    values.update({name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None})
    values["engine"] = EngineOptions(
        **{name: getattr(args, name) for name in ENGINE_OPTIONS if getattr(args, name) is not None}
    )
    if args.corrupt is not None:
        values["corrupt"] = None if args.corrupt.lower() == "none" else args.corrupt.lower()
    return RunConfig(**values).validate()


def _looks_like_store(path: str) -> bool:
    return path.lower().endswith(STORE_SUFFIXES)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.store_file is not None:
            if not _looks_like_store(args.store_file):
                raise UserError(f"{args.store_file}: expected a store file ending in .h5 (see --help)")
            if not Path(args.store_file).is_file():
                raise UserError(f"{args.store_file}: no such store file")
            if args.export:
                _export_existing(Path(args.store_file), Path(args.export), args.top_k)
                return
            _open_ui(Path(args.store_file), None)
            return
        config = config_from_args(args)
        if config.nproc > 1 and _world_size() > 1:
            raise UserError("--nproc starts torchrun; under torchrun already, leave it out")
        if config.nproc > 1 and config.export:
            sys.exit(_torchrun_export(config.nproc, list(sys.argv[1:] if argv is None else argv)))
        if config.export:
            _export(config, args.top_k)
        elif _world_size() > 1:
            raise UserError("under torchrun every rank runs headless: give --export OUT")
        else:
            _open_ui(None, config)
    except UserError as error:  # store errors included: one line, no traceback
        fail(str(error))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the store can be resumed by running the same command", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _world_size() -> int:
    return int(os.environ.get(WORLD_SIZE_ENV, "1"))


def _without_nproc(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _torchrun_export(nproc: int, argv: list[str]) -> int:
    """The same command on ``nproc`` local processes, by torch's own launcher; its exit status."""
    return subprocess.run([*torchrun(nproc), "-m", CLI_MODULE, *_without_nproc(argv)]).returncode


def _export(config: RunConfig, top_k: int) -> None:
    from influence.pipeline import run_export  # torch, never textual

    for path in run_export(config, top_k=top_k):
        print(path)


def _export_existing(store: Path, out: Path, top_k: int) -> None:
    from store.export import export_tables
    from store.reader import StoreReader

    out.mkdir(parents=True, exist_ok=True)
    with StoreReader(store) as reader:
        for path in export_tables(reader, out, k=top_k):
            print(path)


def _open_ui(store: Optional[Path], config: Optional[RunConfig]) -> None:
    from tui.app import run_app  # textual, never torch at import

    run_app(store=store, config=config)


if __name__ == "__main__":
    main()
