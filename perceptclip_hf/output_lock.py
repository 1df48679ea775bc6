"""One writer per output: a lock file beside a score file (``<file>.lock``) or in a training run's folder
(``<output_dir>/.perceptclip.lock``), held while a command writes there.

A second command on the same output is refused with one line naming the holder (pid, host, start time, command)
and the fix. The lock is the operating system's (a POSIX record lock: held by the process, not by the workers it
forks), so a run killed in any way — even ``kill -9`` — holds nothing: its lock file is found stale, taken over and
said so, and ``--resume`` goes on as before. The file itself only tells who holds the lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError
from .output_safety import is_disk_full

try:
    import fcntl
except ImportError:  # Windows: the C runtime's byte-range lock
    fcntl = None
    import msvcrt

RUN_FOLDER_LOCK = ".perceptclip.lock"
logger = logging.getLogger(__name__)
HELD: set[str] = set()  # the locks this process holds (real paths)


def lock_path(output: str | os.PathLike) -> Path:
    """The lock of a score file: ``<file>.lock`` beside it."""
    return Path(f"{os.fspath(output)}.lock")


class OutputLock:
    """The lock of one output, held from :meth:`acquire` to :meth:`release` (or as a context manager).
    ``what`` names the output in messages (``"--output scores.csv"``), ``fix`` says what to do when it is held;
    taking over a killed run's lock is said to ``report`` (default: this module's logger)."""

    def __init__(
        self,
        path: str | os.PathLike,
        what: str,
        fix: str = "wait for it to end, or stop it",
        report: Callable[[str], None] | None = None,
    ):
        self.path, self.what, self.fix, self.report = Path(path), what, fix, report
        self.fd: int | None = None
        self.key = ""
        self.stale: dict[str, Any] | None = None  # who held the lock file before, if a killed run left it

    def acquire(self) -> OutputLock:
        """Take the lock (held already: nothing to do), or raise :class:`OutputError` naming the process that holds
        it."""
        if self.fd is not None:
            return self
        key = os.path.realpath(self.path)
        if key in HELD:  # (an OS lock does not stand between two users in one process)
            raise OutputError(f"{self.what} is being written by another run in this process; {self.fix}")
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not try_lock(fd):
                holder = read_holder(fd) or {}
                os.close(fd)
                raise OutputError(f"{self.what} is being written by another run ({describe(holder)}); {self.fix}")
            if not same_file(fd, self.path):  # its holder removed it as we opened it: lock the new one
                os.close(fd)
                continue
            self.stale = read_holder(fd)
            if self.stale is None:
                os.close(fd)
                raise OutputError(
                    f"{self.what}: {self.path} is not a lock file of this package; it is left untouched: move it "
                    "away or choose another output"
                )
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)  # (after reading the stale holder: write from the start)
                os.write(fd, json.dumps(holder_record()).encode())
            except OSError as err:  # a full disk: the lock holds all the same, unsigned (the output's write says why)
                if not is_disk_full(err):
                    os.close(fd)
                    raise
            self.fd = fd
        self.key = key
        HELD.add(key)
        if self.taken_over():
            (self.report or logger.warning)(self.taken_over())
        return self

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (a waiting run then finds its file gone and locks anew)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # Windows: an open file cannot be removed; the next run finds it unlocked
            pass
        os.close(self.fd)
        self.fd = None
        HELD.discard(self.key)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def taken_over(self) -> str | None:
        """A line for the user when the lock file of a killed run was taken over, else ``None``."""
        if not self.stale:  # none, or an empty file
            return None
        return (
            f"note: {self.what}: taking over the lock of a run that ended without releasing it ({describe(self.stale)})"
        )


def try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a POSIX lock: its process's own, not its children's
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def holder_record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "",
    }


def read_holder(fd: int) -> dict[str, Any] | None:
    """Who the lock file says holds it (``{}``: an empty file), ``None`` for a file that is not a lock of ours."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 65536)
    if not data:
        return {}
    try:
        holder = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and "pid" in holder else None


def describe(holder: dict[str, Any]) -> str:
    """``pid 1234 on host, started 2026-12-06 04:00:00: perceptclip predict ...``."""
    if not holder:
        return "a process that has not said who it is"
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    return f"{text}: {holder['command']}" if holder.get("command") else text


__all__ = ["RUN_FOLDER_LOCK", "OutputLock", "lock_path"]
