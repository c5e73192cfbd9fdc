"""Durable file writes: the one atomic writer, and moving an unusable file aside.

Checkpoints and reference snapshots are both written through
:func:`write_atomically` (temporary file, fsync, rename, fsync of the folder),
so a crash or power cut leaves either the old file or the new one, never a
mix; unusable ones are renamed aside with :func:`move_aside`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

logger = logging.getLogger(__name__)

CORRUPT_INFIX: Final = ".corrupt-"


def temporary_prefix(path: Path) -> str:
    """The name every temporary file of :func:`write_atomically` for ``path`` starts with."""
    return f".{path.name}.tmp-"


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, atomically and durably (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file handle whose contents replace ``path`` when the block ends without error.

    What is written goes to a new temporary file in the same folder, created
    with ``mode`` and never over an existing file; at the end of the block it
    is flushed, fsynced and renamed over ``path`` with :func:`os.replace`, then
    the folder is fsynced so the rename survives a power cut. On any failure
    (including ``KeyboardInterrupt``) the temporary file is removed and ``path``
    is left as it was. Raises ``OSError``.
    """
    path = Path(path)
    temporary = new_temporary(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def new_temporary(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path`` that :func:`remove_temporaries` recognises."""
    return path.with_name(
        f"{temporary_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    )


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX: fsync the folder itself)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(directory, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(directory: Path, prefix: str) -> list[Path]:
    """Delete the files in ``directory`` whose names start with ``prefix``; returns them.

    For the temporaries a crashed :func:`write_atomically` left behind;
    directories are never touched, a missing ``directory`` is no error, and a
    file that cannot be removed is logged and skipped.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot remove stale temporary %s: %s", path, exc)
            continue
        logger.info("removed stale temporary %s", path)
        removed.append(path)
    return removed


def move_aside(
    path: Path,
    reason: str,
    *,
    now: float | None = None,
    what: str = "file",
    log: logging.Logger = logger,
) -> Path:
    """Rename an unusable file to ``<name>.corrupt-<UTC time>`` in its folder.

    The name is ``f"{path.name}.corrupt-20261125T011500Z"`` for ``now`` (epoch
    seconds, default the current time), with ``-1``, ``-2``... appended when
    that name is taken: an earlier corrupt file is never overwritten. Logs an
    error on ``log`` naming both paths and ``reason``, calling the file ``what``;
    returns the new path. Raises ``OSError`` when the file cannot be renamed.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    base = f"{path.name}{CORRUPT_INFIX}{stamp}"
    counter = 0
    while True:
        target = path.with_name(base if counter == 0 else f"{base}-{counter}")
        if _rename_no_clobber(path, target):
            break
        counter += 1
    try:
        fsync_directory(path.parent)
    except OSError as exc:  # the rename happened; durability is best effort here
        log.warning("cannot fsync %s after moving a %s aside: %s", path.parent, what, exc)
    log.error("%s %s is unusable (%s); moved it aside to %s", what, path, reason, target)
    return target


def _rename_no_clobber(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists; False when it does."""
    try:
        # A hard link fails atomically when the target exists, unlike rename.
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (a directory, a filesystem without them): check
        # then rename; the daemon is the only writer of its state dir.
        if os.path.lexists(target):
            return False
        os.rename(source, target)
        return True
    os.unlink(source)
    return True
