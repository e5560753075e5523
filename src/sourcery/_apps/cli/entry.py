"""The entry point: parse the command line, set up output and logging, run one command,
and turn what it raised into an exit code (0 ok, 1 error, 2 usage, 130 interrupted).

Each command module adds its own subcommands with ``add_parsers``; a subcommand sets
``run(args, out, err) -> int`` and, when some arguments only make sense together,
``check(args) -> str | None`` (a usage error's text).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from sourcery._apps.cli import demo, inspect, projections, stores, worker
from sourcery._apps.cli.common import console, logging_to, one_line
from sourcery._core.errors import SourceryError
from sourcery._core.version import __version__

__all__ = ["main"]

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        check = getattr(args, "check", None)
        problem = check(args) if check is not None else None
        if problem:
            parser.error(problem)
    except SystemExit as exc:  # --help, or a usage error (argparse has printed it)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    out = console(stderr=False)
    err = console(stderr=True)
    with logging_to(err, args.verbose):
        return _run(args, out, err)


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run the command; print what it raised as one line and turn it into an exit code."""
    try:
        result: int = args.run(args, out, err)
        return result
    except (SourceryError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(one_line(exc))}", soft_wrap=True)
        log.debug("details", exc_info=exc)
        return 1
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sourcery",
        description="Event-sourced actors that stay available under partitions.",
    )
    parser.add_argument("--version", action="version", version=f"sourcery {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (demo, inspect, projections, stores, worker):
        module.add_parsers(commands)
    for command in commands.choices.values():  # -v after the subcommand too
        command.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="log more (-v info, -vv debug)",
        )
    return parser
