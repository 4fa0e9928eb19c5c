"""Files written atomically: a temporary file (or folder) beside the target, flushed to disk and
renamed over it, so a reader (or a crash, or a full disk) sees the old complete file or the new one,
never a part, and a failed write keeps the old file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial-"  # in the name of every temporary file or folder a write leaves if it is killed


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path`; renamed over `path` when the block exits normally (after an
    fsync), deleted when it raises. For writers that take a file name (torch.save, savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would lock colleagues out of a shared run
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path`, put in its place when the block exits normally (the old
    folder, if any, is removed only after); deleted when the block raises, leaving `path` as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        _honour_umask(tmp)
        old = path.parent / f".{path.name}{PARTIAL}old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    """The process's umask, read without setting it where Linux tells it (os.umask both reads and sets,
    which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 (and some writers do too): give the finished tree the modes a
    plain mkdir/open would have under the process's umask."""
    mask = _umask()
    for item in [folder, *folder.rglob("*")]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def _fsync_dir(folder: Path) -> None:

    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, payload) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def waiting_lock(path: Path, waiting: str) -> Iterator[None]:
    """An exclusive lock on the file `path` for the block; a second holder prints `waiting` and waits
    (for work that two processes must not do twice, such as building one cache entry)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting, flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def remove_partials(folder: Path, of: str | None = None) -> list[Path]:
    """Remove what killed atomic writes left below `folder` (hidden `.<name>.partial-*` files and
    folders, full-size checkpoints among them); only `of`'s, directly in `folder`, when given. Call it
    while holding the lock that keeps other writers out. Returns what was removed."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.glob(f".{of}{PARTIAL}*") if of else folder.rglob(f".*{PARTIAL}*")
    removed = []
    for item in sorted(found, key=lambda p: -len(p.parts)):
        if item.exists():
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
            removed.append(item)
    return removed
