"""Opening the files the daemon reads at start: regular files only, of a bounded size.

A checkpoint or snapshot path may be anything the filesystem holds: a FIFO
(opening it for reading waits for a writer, forever), a symlink to
``/dev/zero`` (reading it never ends) or a directory. Every such file is
refused from its type, before a byte is read, and a regular file larger than
the caller's bound is refused from its size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotARegularFile(OSError):
    """The path is not a regular file, or is larger than allowed; the message says which."""


def open_regular(path: Path, *, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading, once it is known to be a regular file.

    Opened non-blocking (a FIFO's open returns at once instead of waiting for
    a writer), then checked with ``fstat`` on the open descriptor (no race
    with a rename), then switched back to blocking reads. Raises
    ``FileNotFoundError`` and other ``OSError`` as :func:`open` does, and
    :class:`NotARegularFile` for a FIFO, device, socket or directory, or a
    file of more than ``max_bytes``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{path} is not a regular file ({_kind(info.st_mode)})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise NotARegularFile(
                f"{path} holds {info.st_size} bytes, more than the {max_bytes} allowed"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of regular file ``path``, of at most ``max_bytes`` (see :func:`open_regular`).

    A file that grows past the bound while it is read is refused too.
    """
    with open_regular(path, max_bytes=max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotARegularFile(f"{path} grew past the {max_bytes} bytes allowed while read")
    return data


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


LOCK_NAME = "driftmon.lock"
"""The lock file a running daemon holds in its ``state.dir``."""


class StateDirInUse(OSError):
    """Another process holds the lock on the state directory."""


class StateDirLock:
    """An exclusive ``flock`` on ``<state.dir>/driftmon.lock``, held for the process's life.

    Two daemons on one state directory would restore, then overwrite each
    other's checkpoints: the second refuses to start instead. The lock is
    the kernel's, so it goes with the process however that ends (even
    ``kill -9``); the file itself stays and holds the holder's pid, for the
    error message only.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the directory); :class:`StateDirInUse` when held."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateDirInUse(
                f"state.dir {self.path.parent} is in use by another driftmon (pid {holder}): "
                "one daemon per state directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
