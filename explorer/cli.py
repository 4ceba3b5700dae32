"""The `fpx` command line: one entry point, one module per sub-command.

Each module in :mod:`explorer.commands` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
The CLI is thin: it parses, calls a library function and prints.

One error path (:func:`main`): every failure a user can cause is printed as ONE line on stderr,
``fpx COMMAND: error: MESSAGE``, naming the file or option, with exit code 2 and no traceback.
User failures are the exceptions in :data:`USER_ERRORS`: bad values (``ValueError``,
``TypeError``, ``KeyError``, :class:`CLIError`), files and disks (``OSError``: missing, a
directory, no permission, read-only, full), databases (``sqlite3.Error``), diverging arithmetic
(``FloatingPointError``) and sizes beyond this machine (``MemoryError``).  Anything else is a bug
in fpx and keeps its traceback.  A closed stdout (``fpx info e4m3 --values | head -1``) ends the
command quietly with exit code 141 (128 + SIGPIPE, what a shell reports for a killed writer).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sqlite3
import sys

COMMANDS = ["info", "quantize", "vectors", "train", "recipes", "sweep", "fit", "recommend",
            "report"]

#: Exit status for a user error (argparse's too).
EXIT_USER_ERROR = 2
#: Exit status when stdout was closed by the reader: 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141


class CLIError(Exception):
    """A user error the CLI reports in one line with exit code 2."""


USER_ERRORS = (CLIError, ValueError, TypeError, KeyError, OSError, sqlite3.Error,
               FloatingPointError, MemoryError)

# What to do about an OS error, by errno: appended to the system's own wording.
_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EACCES: "check the permissions, or write elsewhere",
    errno.EPERM: "check the permissions, or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free space or write elsewhere",
    errno.EEXIST: "it already exists",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpx",
        description="Low-precision number-format design-space explorer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"explorer.commands.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def _file_options(args: argparse.Namespace) -> str:
    """``--law fit.json, runs runs.db``: the options of ``args`` that name existing files, for
    errors that do not say which file they came from (a decode error, a database error)."""
    named = []
    for key, value in vars(args).items():
        if key.startswith("_") or not isinstance(value, str) or not value:
            continue
        if os.path.isfile(value):
            flag = key if key in ("input", "output", "runs", "spec") else "--" + key.replace("_",
                                                                                           "-")
            named.append(f"{flag} {value}")
    return ", ".join(named)


def user_message(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """The one line (without the ``fpx CMD: error:`` prefix) that reports ``exc`` to the user."""
    files = _file_options(args) if args is not None else ""
    if isinstance(exc, UnicodeDecodeError):
        where = f" ({files})" if files else ""
        return (f"cannot read a text file{where}: byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start} is not {exc.encoding}; is it a binary file?")
    if isinstance(exc, OSError) and exc.errno is not None:
        system = os.strerror(exc.errno)
        what = exc.strerror or system
        hint = _OS_HINTS.get(exc.errno)
        # Our own messages already say what to do; the system's wording gets the hint.
        text = what + (f" ({hint})" if hint and what == system else "")
        if exc.filename is not None:
            target = os.fsdecode(exc.filename)
            if exc.filename2 is not None:
                target += f" -> {os.fsdecode(exc.filename2)}"
            return f"{target}: {text}"
        return text
    if isinstance(exc, sqlite3.Error):
        where = f"{files}: " if files else ""
        return f"{where}database error: {exc}"
    if isinstance(exc, MemoryError):
        detail = str(exc) or "the sizes asked for"
        return f"out of memory ({detail}); lower the sizes given (--count, --samples, --k, input)"
    if isinstance(exc, FloatingPointError):
        return f"the computation diverged: {exc}"
    msg = exc.args[0] if len(exc.args) == 1 else str(exc)
    return str(msg) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of the closed pipe cannot
    print "Exception ignored ... BrokenPipeError" (Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):       # stdout without a file descriptor (captured in tests)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()              # a closed pipe shows up here, inside the error path
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except USER_ERRORS as exc:
        print(f"fpx {args.command}: error: {_one_line(user_message(exc, args))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"fpx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
