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
