"""From a configuration to a finished store, and ``--export``: open (or create) the store,
run the stages, write the tables.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import torch

from influence.distributed import Ranks, join, leave
from influence.modeling import count_parameters, resolve_device
from influence.preparation import prepare
from influence.stages import StageRunner
from job.config import RunConfig
from job.errors import UserError
from job.progress import ProgressCallback
from store.checkpoint import remove_checkpoints
from store.errors import StoreMismatch
from store.layout import StoreLayout
from store.writer import StoreWriter


def run_pipeline(
    config: RunConfig,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> Optional[Path]:
    """Compute (or finish) the analysis of ``config`` into its store; returns the store's path.

    Under torchrun every rank calls this; rank 0 alone opens the store, reports ``progress`` and
    returns the path (the others None). A rank that fails ends the run: torchrun stops the rest."""
    started = time.time()
    ranks = join(resolve_device(config.device))
    if ranks.leads:
        path: Optional[Path] = _run_leader(config, ranks, started, progress, cancel)
    else:
        ranks.barrier()  # rank 0 prepares first: it may train (and cache) the demo model
        StageRunner(prepare(config, None, cancel, ranks), None, None, cancel).run()
        path = None
    leave(ranks)
    return path


def _run_leader(
    config: RunConfig,
    ranks: Ranks,
    started: float,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> Path:
    analysis = prepare(config, progress, cancel, ranks)
    ranks.barrier()
    path = config.store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        remove_checkpoints(path)  # left by an earlier store of that name
    with _open_writer(path, analysis.layout, owned=config.uses_cache_store) as writer:
        StageRunner(analysis, writer, progress, cancel).run()
        writer.write_summary(
            "run",
            {
                "device": str(analysis.engine.device),
                "threads": torch.get_num_threads(),
                "model_source": analysis.loaded.source,
                "total_parameters": count_parameters(analysis.loaded.model),
                "tracked_parameters": analysis.engine.tracked_parameters,
                "ranks": ranks.world,
                "fisher": analysis.engine.options.fisher,
                "mode": analysis.engine.options.mode,
                "wall_seconds_last_run": round(time.time() - started, 3),
            },
        )
    remove_checkpoints(path)
    return path


def _open_writer(path: Path, layout: StoreLayout, owned: bool) -> StoreWriter:
    """Resume or create the store. A store the user named is never replaced; one in our own
    cache that belongs to another run (the demo model was retrained, say) is recreated."""
    try:
        return StoreWriter.open_or_create(path, layout)
    except StoreMismatch:
        if not owned:
            raise
    remove_checkpoints(path)
    return StoreWriter.create(path, layout)


def _check_writable(folder: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write to output folder {folder}: {error.strerror or error}") from None


def run_export(config: RunConfig, top_k: int = 10) -> list[Path]:
    """``--export``: compute (or finish) the store, then write the tables beside it."""
    from influence.console import StderrProgress
    from store.export import export_tables
    from store.reader import StoreReader

    out = Path(config.export or ".")
    _check_writable(out)
    _check_writable(config.store_path().parent)
    with StderrProgress() as progress:
        store_path = run_pipeline(config, progress=progress)
    if store_path is None:
        return []  # a rank other than 0: rank 0 writes the tables
    with StoreReader(store_path) as reader:
        tables = export_tables(reader, out, k=top_k)
    return [store_path, *tables]
