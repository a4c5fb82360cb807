"""Opening, copying and syncing HDF5 files: the few places that need HDF5's low-level API.

Why SWMR is opened by hand: ``h5py.File(mode="r+")`` cannot open a file directly
in SWMR-write mode, and the window between opening for writing and switching to
SWMR would make readers fail. Why nobody takes HDF5's file lock: a reader holding
it would stop the engine from resuming the store it shows, and HDF5 refuses to
open one file with different lock settings in one process (UI and engine thread);
the single writer is enforced by ``store.lock`` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py

LIBVER_BOUNDS = ("v110", "latest")  # superblock version 3: the oldest format SWMR supports
_LOW_LEVEL_LIBVER = (h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
READER_CHUNK_CACHE_BYTES = 8 * 1024 * 1024
READER_CHUNK_CACHE_SLOTS = 10007  # a prime, as HDF5 recommends, well above the chunks that fit

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUPERBLOCK_HEAD_BYTES = 64
_FIRST_VERSION_WITH_FLAGS = 2  # superblock versions 2 and 3 have the layout parsed below


@dataclass(frozen=True)
class Superblock:
    """The superblock fields that crash recovery and the truncation check need."""

    version: int
    writer_flags: int  # non-zero while a writer has the file open, or after it died
    end_of_allocation: int  # bytes the file must have


def has_signature(path: str | Path) -> bool:
    """Whether the file starts like an HDF5 file (stores never have a user block)."""
    with open(path, "rb") as handle:
        return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def read_superblock(path: str | Path) -> Superblock | None:
    """Parse a version 2/3 superblock at offset 0; None for other files (older formats, not HDF5)."""
    with open(path, "rb") as handle:
        head = handle.read(_SUPERBLOCK_HEAD_BYTES)
    if not head.startswith(HDF5_SIGNATURE) or len(head) < 12 or head[8] < _FIRST_VERSION_WITH_FLAGS:
        return None
    offset_size = head[9]
    eoa_at = 12 + 2 * offset_size  # after base address and superblock-extension address
    if len(head) < eoa_at + offset_size:
        return None
    eoa = int.from_bytes(head[eoa_at : eoa_at + offset_size], "little")
    return Superblock(version=head[8], writer_flags=head[11], end_of_allocation=eoa)


def open_swmr_writer(path: str | Path) -> h5py.File:
    """Open ``path`` for writing directly in SWMR mode."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(*_LOW_LEVEL_LIBVER)
    fapl.set_file_locking(False, True)  # as readers do: HDF5 refuses to mix settings in one process
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    return h5py.File(fid)


def open_reader(path: str | Path, *, swmr: bool) -> h5py.File:
    """Open ``path`` read-only (as a SWMR reader when ``swmr``) without taking HDF5's file lock."""
    return h5py.File(
        path,
        "r",
        swmr=swmr,
        locking=False,
        rdcc_nbytes=READER_CHUNK_CACHE_BYTES,
        rdcc_nslots=READER_CHUNK_CACHE_SLOTS,
    )


def create_file(path: str | Path) -> h5py.File:
    """A new, empty file in the format version SWMR needs."""
    return h5py.File(path, "w", libver=LIBVER_BOUNDS)


def release_reserve(path: Path) -> None:
    """Cut a closed file back to HDF5's end of allocation (the writer reserves disk space beyond it)."""
    superblock = read_superblock(path)
    if superblock is not None and superblock.writer_flags == 0 and os.path.getsize(path) > superblock.end_of_allocation:
        os.truncate(path, superblock.end_of_allocation)


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path``, fsync the directory: all-or-nothing even on power loss."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def copy_file_contents(source: Path, target: Path) -> None:
    """Copy every object and root attribute of ``source`` (read as a SWMR reader) into a new ``target``.

    This is how a store left with its writer flags set (writer killed) is recovered:
    HDF5 refuses to reopen such a file for writing, while a SWMR reader sees a
    consistent state; H5Ocopy copies chunks without decompressing them and keeps
    unwritten chunks unallocated.
    """
    with open_reader(source, swmr=True) as src, create_file(target) as dst:
        for name in src.attrs:
            dst.attrs.create(name, src.attrs[name], dtype=src.attrs.get_id(name).dtype)
        for name in src:
            src.copy(src[name], dst, name)
