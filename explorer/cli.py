"""The `fpx` command line: one entry point, one module per sub-command.

Each module in :mod:`explorer.commands` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
The CLI is thin: it parses, calls a library function and prints.  Errors that are the user's
(a bad format name, a missing file, an out-of-range value) surface as ``ValueError``,
``TypeError``, ``FileNotFoundError`` or :class:`CLIError` and are printed as one line with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["info", "quantize", "vectors", "train", "sweep", "fit", "recommend", "report"]


class CLIError(Exception):
    """A user error the CLI reports in one line with exit code 2."""


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"fpx {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fpx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
