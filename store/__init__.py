"""The HDF5 store: the contract between the engine (writer) and the terminal UI and export (readers).

h5py and numpy only: importing ``store`` never imports torch or textual.
"""

from job.stages import STAGES, STATUSES
from store.errors import (
    StoreDamaged,
    StoreError,
    StoreLocked,
    StoreMismatch,
    StoreNotFound,
    StoreVersionError,
    StoreWriteError,
)
from store.layout import ExampleTable, LayerInfo, StoreLayout
from store.reader import ExampleView, StoreReader
from store.schema import FORMAT_NAME, FORMAT_VERSION, stage_key
from store.stages import StageRecord
from store.writer import StoreWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STAGES",
    "STATUSES",
    "ExampleTable",
    "ExampleView",
    "LayerInfo",
    "StageRecord",
    "StoreDamaged",
    "StoreError",
    "StoreLayout",
    "StoreLocked",
    "StoreMismatch",
    "StoreNotFound",
    "StoreReader",
    "StoreVersionError",
    "StoreWriteError",
    "StoreWriter",
    "stage_key",
]
