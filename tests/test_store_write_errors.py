"""Write errors (full disk, file-size limit, permission denied, read-only file system) give a one-line
StoreWriteError naming the file and the reason; what was written before stays readable and resumable.

Tests run as root, for whom chmod stops nothing: the children limit themselves (RLIMIT_FSIZE), drop to
user nobody, or mount a tiny tmpfs / a read-only bind in a private mount namespace (skipped where the
machine does not allow it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_store_support import (
    REPO,
    check_against_expected,
    child_env,
    run_child,
    run_pipeline,
    small_layout,
)

from store import StoreReader


def error_layout():
    """32 blocks of about 260 KB: a few fit before the limits below, not all."""
    return small_layout(n_test=64, n_train=2000, score_block=64)


# Writes blocks until the disk (or the file-size limit) stops it; reports what happened as JSON.
FILL_UNTIL_ERROR = r"""
import dataclasses, json, os, resource, signal, sys
from pathlib import Path
from store import StoreReader, StoreWriteError, StoreWriter
from test_store_support import block_scores, check_against_expected
from test_store_write_errors import error_layout

path, limit = Path(sys.argv[1]), sys.argv[2]
layout = error_layout()
report = {}
writer = StoreWriter.create(path, layout)
for block in range(2):
    writer.write_score_block(block, **block_scores(layout, block))
if limit == "rlimit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 1_000_000, resource.RLIM_INFINITY))
try:
    for block in range(2, layout.n_blocks):
        writer.write_score_block(block, **block_scores(layout, block))
except StoreWriteError as error:
    report["error"] = str(error)
try:
    writer.set_stage("scores", "done")
except StoreWriteError as error:
    report["next"] = str(error)
writer.close()
with StoreReader(path) as reader:
    report["blocks"] = check_against_expected(reader, layout)
if limit == "tmpfs":  # a new store whose texts alone exceed the free space is refused before HDF5 writes
    big = dataclasses.replace(layout, test=dataclasses.replace(layout.test, text=["x" * 500_000] * layout.n_test))
    try:
        StoreWriter.create(path.with_name("big.h5"), big)
    except StoreWriteError as error:
        report["create"] = str(error)
print(json.dumps(report))
"""


def _can_unshare_mounts() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(not _can_unshare_mounts(), reason="needs root and unshare -m")


def _in_mount_namespace(setup: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c code args`` after the shell commands ``setup``, in a private mount namespace."""
    command = f'{setup} && exec "$0" -c "$1" "${{@:2}}"'
    return subprocess.run(
        ["unshare", "-m", "bash", "-c", command, sys.executable, code, *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_report(result: subprocess.CompletedProcess, path: Path, reason: str) -> dict:
    assert result.returncode == 0, result.stderr  # no crash on the way out either
    report = json.loads(result.stdout)
    for message in (report["error"], report["next"]):
        assert message.startswith(str(path)) and "\n" not in message
    assert reason in report["error"] and "earlier write failed" in report["next"]
    assert report["blocks"] >= 2
    return report


@pytest.mark.slow  # a child process under a file-size limit
def test_file_size_limit(tmp_path):
    path = tmp_path / "run.h5"
    report = _check_report(run_child(FILL_UNTIL_ERROR, str(path), "rlimit"), path, "File too large (EFBIG)")
    layout = error_layout()
    with StoreReader(path) as reader:  # another process, without the limit
        assert check_against_expected(reader, layout) == report["blocks"] < layout.n_blocks
    run_pipeline(path, layout)  # and the run can resume and finish
    with StoreReader(path) as reader:
        assert check_against_expected(reader, layout) == layout.n_blocks


@needs_mount_namespace
def test_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    path = disk / "run.h5"
    result = _in_mount_namespace(f"mount -t tmpfs -o size=2m tmpfs {disk}", FILL_UNTIL_ERROR, str(path), "tmpfs")
    report = _check_report(result, path, "No space left on device (ENOSPC)")
    assert "cannot create the store" in report["create"] and "ENOSPC" in report["create"]


@needs_mount_namespace
def test_read_only_file_system(tmp_path):
    path = tmp_path / "run.h5"
    layout = small_layout()
    run_pipeline(path, layout)
    code = r"""
import json, sys
from pathlib import Path
from store import StoreReader, StoreWriteError, StoreWriter
from test_store_support import check_against_expected, small_layout
path = Path(sys.argv[1])
report = {}
for name, attempt in (("open", lambda: StoreWriter.open(path, small_layout())),
                      ("create", lambda: StoreWriter.create(path.with_name("new.h5"), small_layout()))):
    try:
        attempt()
    except StoreWriteError as error:
        report[name] = str(error)
with StoreReader(path) as reader:
    report["blocks"] = check_against_expected(reader, small_layout())
print(json.dumps(report))
"""
    result = _in_mount_namespace(
        f"mount --bind {tmp_path} {tmp_path} && mount -o remount,ro,bind {tmp_path}", code, str(path)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["blocks"] == layout.n_blocks
    for name in ("open", "create"):
        assert "Read-only file system (EROFS)" in report[name] and "\n" not in report[name]
    assert report["open"].startswith(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied():
    base = Path(tempfile.mkdtemp(prefix="store-perm-"))
    try:
        base.chmod(0o755)
        read_only_dir, writable_dir = base / "ro", base / "rw"
        read_only_dir.mkdir()
        writable_dir.mkdir(mode=0o777)
        writable_dir.chmod(0o777)
        layout = small_layout()
        for directory in (read_only_dir, writable_dir):
            run_pipeline(directory / "run.h5", layout)
            (directory / "run.h5").chmod(0o444)
        read_only_dir.chmod(0o555)
        code = r"""
import json, os, sys
import numpy.testing
from pathlib import Path
from store import StoreReader, StoreWriteError, StoreWriter
from test_store_support import check_against_expected, small_layout
layout = small_layout()
os.setgid(65534); os.setuid(65534)  # after the imports: the interpreter lives under /root
ro, rw = Path(sys.argv[1]), Path(sys.argv[2])
report = {}
for name, attempt in (("create", lambda: StoreWriter.create(ro / "new.h5", layout)),
                      ("open_in_read_only_dir", lambda: StoreWriter.open(ro / "run.h5", layout)),
                      ("open_read_only_file", lambda: StoreWriter.open(rw / "run.h5", layout))):
    try:
        attempt()
    except StoreWriteError as error:
        report[name] = str(error)
with StoreReader(ro / "run.h5") as reader:
    report["blocks"] = check_against_expected(reader, layout)
print(json.dumps(report))
"""
        result = run_child(code, str(read_only_dir), str(writable_dir))
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["blocks"] == layout.n_blocks
        for name in ("create", "open_in_read_only_dir", "open_read_only_file"):
            assert "Permission denied (EACCES)" in report[name] and "\n" not in report[name], report
        assert report["open_read_only_file"].startswith(str(writable_dir / "run.h5"))
        assert "open the store for writing" in report["open_read_only_file"]
    finally:
        shutil.rmtree(base)
