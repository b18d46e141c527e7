"""One owner per run directory: ``RUN/.lock``, held with ``fcntl.flock`` for the life of the training process.

The lock file holds the owner's pid (for the message a second owner gets). The kernel releases a flock when
its process dies, however it dies (SIGKILL included), so a stale ``.lock`` left by a dead process is simply
taken over: there is nothing to clean up and no pid-reuse guesswork. Fresh run directories are created with
an exclusive ``mkdir`` (default names get a ``-2``, ``-3``, … suffix when the timestamp is taken), an
existing one is never reused by a fresh run, and ``--overwrite`` moves the old one aside before deleting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from .config import ConfigError

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive, non-blocking flock on ``run_dir/.lock``; ``ConfigError`` naming the holder's pid if taken."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(f"cannot create the lock file {str(self.path)!r}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = read_pid(fd)
            os.close(fd)
            raise ConfigError(f"run directory {str(self.path.parent)!r} is in use by another oemdm process "
                              f"(pid {holder or 'unknown'}, holding {LOCK_NAME}); wait for it to finish, stop it, or "
                              "use another --name") from None
        self.fd = fd
        with contextlib.suppress(OSError):  # the pid is for messages only; a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()


def read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _occupied(run_dir: Path) -> bool:
    return any(p.name != LOCK_NAME for p in run_dir.iterdir())


def check_owner(run_dir: Path) -> None:
    """Refuse a run directory another live process holds (read-only probe: nothing is created)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        holder = read_pid(fd)
        raise ConfigError(f"run directory {str(run_dir)!r} is in use by another oemdm process (pid "
                          f"{holder or 'unknown'}, holding {LOCK_NAME}); wait for it to finish, stop it, or use "
                          "another --name") from None
    finally:
        os.close(fd)


def check_fresh_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Before anything is written: refuse a run directory in use, and an existing, non-empty one unless
    ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} exists and is not a directory")
    if run_dir.is_dir():
        check_owner(run_dir)
    if run_dir.is_dir() and _occupied(run_dir) and not overwrite:
        raise ConfigError(
            f"run directory {str(run_dir)!r} already exists; a fresh run never reuses one. Use "
            f"`oemdm train --resume {run_dir}` to continue it, another --name, or --overwrite to replace it")


def claim_run_dir(run_dir: Path, overwrite: bool, unique: bool) -> tuple[Path, RunLock]:
    """Create and lock a fresh run directory; return it (with a suffix when ``unique``) and its lock.

    ``unique`` (a default, timestamp name): an exclusive mkdir, retried with ``-2``, ``-3``, … so that runs
    started in the same second never share a directory. Otherwise the named directory: an empty one (or one
    holding only a stale lock) is taken, a non-empty one needs ``overwrite``, one in use is refused."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        for n in range(1, 10_000):
            cand = run_dir if n == 1 else run_dir.with_name(f"{run_dir.name}-{n}")
            try:
                cand.mkdir()
            except FileExistsError:
                continue
            return cand, RunLock(cand)
        raise ConfigError(f"cannot find a free run directory name next to {str(run_dir)!r}")
    with contextlib.suppress(FileExistsError):
        run_dir.mkdir()
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} exists and is not a directory")
    lock = RunLock(run_dir)  # refuses a directory another process owns
    if _occupied(run_dir):
        if not overwrite:
            lock.release()
            check_fresh_run_dir(run_dir, overwrite)  # raises the "already exists" message
        # move the old contents aside in one rename (atomic), then delete them: a kill in between leaves the
        # old run intact under the aside name, never a half-deleted directory under the run's name
        aside = run_dir.with_name(f".{run_dir.name}.overwritten-{os.getpid()}")
        os.replace(run_dir, aside)
        lock.release()
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise ConfigError(f"run directory {str(run_dir)!r} was re-created by another process while being "
                              "overwritten") from None
        lock = RunLock(run_dir)
        shutil.rmtree(aside, ignore_errors=True)
    return run_dir, lock
