"""The export key: ``--export``'s tables for the whole store, plus the current view's table as CSV.

Column conventions follow ``store.export``: snake_case names, scores with the digits a
float32 has, booleans as ``true``/``false``; a score not computed yet is an empty cell.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from store.export import export_tables
from store.reader import StoreReader

EXPORT_SUFFIX = "-export"
SCORE_FORMAT = ".8g"


@dataclass(frozen=True)
class ViewTable:
    """What a view shows, as rows: ``name`` becomes the file name (``name.csv``)."""

    name: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]


def default_folder(store_path: Path) -> Path:
    """Beside the store: ``<stem>-export/``."""
    return store_path.with_name(store_path.stem + EXPORT_SUFFIX)


def csv_value(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else format(float(value), SCORE_FORMAT)
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def write_view_table(table: ViewTable, folder: Path) -> Path:
    path = folder / f"{table.name}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        writer.writerows([csv_value(value) for value in row] for row in table.rows)
    return path


def export_all(reader: StoreReader, folder: Path, table: ViewTable | None) -> list[Path]:
    """Write the store's tables and the view's; returns every path written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = export_tables(reader, folder)
    if table is not None:
        paths.append(write_view_table(table, folder))
    return paths
