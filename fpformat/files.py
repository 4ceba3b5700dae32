"""Atomic file output: a file is either its old self or completely new, never truncated.

:func:`atomic_write` writes into a temporary file in the destination's directory and renames it
into place with :func:`os.replace` (atomic on POSIX and Windows within one file system).  When
anything fails on the way — a full disk (``ENOSPC``), an exception in the caller's code, a
``KeyboardInterrupt`` — the temporary file is removed and an existing file at ``path`` is left
untouched.  A symbolic link at ``path`` is replaced by the new file; its target is never
written.  Standard library only: both :mod:`fpformat` and :mod:`explorer` write through it.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["atomic_write", "check_output_path"]

_MODES = ("w", "wt", "wb")


def check_output_path(path: str | os.PathLike) -> None:
    """Raise the ``OSError`` that writing ``path`` would raise, before any work is done: its
    directory is missing (``FileNotFoundError``) or not a directory (``NotADirectoryError``),
    or ``path`` itself is a directory (``IsADirectoryError``).  Each names ``path``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", p)
    parent = os.path.dirname(p) or "."
    if not os.path.exists(parent):
        raise FileNotFoundError(errno.ENOENT, f"directory {parent} does not exist", p)
    if not os.path.isdir(parent):
        raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a directory", p)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None, errors: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing (``mode`` ``"w"``/``"wt"`` text,
    ``"wb"`` binary; ``encoding``, ``newline`` and ``errors`` as for :func:`open`); on a clean
    exit flush it to disk and rename it to ``path``.

    On any exception the temporary file is deleted and ``path`` is not touched; an ``OSError``
    that names no file (a failed ``write``: ``ENOSPC``, ``EIO``) is given ``path`` as its
    ``filename``, so messages say which output failed.  Errors opening the temporary file
    (missing directory, no permission) also name ``path``, not the temporary name.
    """
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {', '.join(_MODES)}, got {mode!r}")
    target = os.fspath(path)
    check_output_path(target)
    directory, name = os.path.split(target)
    try:                # a replaced file keeps its permission bits; a new one gets the umask's
        perms: int | None = os.stat(target).st_mode & 0o7777
    except OSError:
        perms = None
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, target) from None
    try:
        binary = "b" in mode
        text = {} if binary else {"encoding": encoding, "newline": newline, "errors": errors}
        with os.fdopen(fd, "wb" if binary else "w", **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if perms is not None:
            os.chmod(tmp, perms)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = target
        raise
