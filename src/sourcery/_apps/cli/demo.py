"""``sourcery demo``: the bank partitioned on two sqlite replicas and healed, or the
single-store workload with ``--store``; prints what the audit found (:mod:`.demo_report`)
and exits 1 when it found money lost or replicas that disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sourcery._apps.cli.common import as_url, flush, positive, run
from sourcery._apps.cli.demo_report import print_demo, print_phase, print_replicated_demo
from sourcery._apps.demo import DEFAULT_SNAPSHOT_EVERY, PhaseDone, run_demo, run_replicated_demo
from sourcery._core.config import redact

__all__ = ["DEMO_REPLICAS", "DEMO_SVG", "PHASES", "add_parsers"]

DEMO_REPLICAS = ("sourcery-demo-a.db", "sourcery-demo-b.db")
DEMO_SVG = "sourcery-demo-history.svg"

log = logging.getLogger(__name__)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="partition two replicas of a bank under load, heal them, and audit the result",
        description=(
            "Two replicas of a bank (fresh sqlite files "
            f"{DEMO_REPLICAS[0]} and {DEMO_REPLICAS[1]} in this directory): accounts opened"
            " on A and synced to B; then a partition with deposits and withdrawals on both"
            " sides; then the heal. Checks that money is conserved and that the replicas"
            f" agree, and draws the most diverged account's history to {DEMO_SVG}."
        ),
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="run the single-replica workload on this (empty) store instead",
    )
    demo.add_argument("--accounts", type=positive, default=1000, metavar="N")
    demo.add_argument(
        "--commands",
        type=positive,
        default=20_000,
        metavar="N",
        help="commands in all, counting one Open per account (default: 20000)",
    )
    demo.add_argument(
        "--concurrency",
        type=positive,
        default=200,
        metavar="N",
        help="commands under way at once, on each replica (default: 200)",
    )
    demo.add_argument(
        "--snapshot-every",
        type=positive,
        default=DEFAULT_SNAPSHOT_EVERY,
        metavar="N",
        help=f"events between snapshots of an account (default: {DEFAULT_SNAPSHOT_EVERY})",
    )
    demo.add_argument("--seed", type=int, help="seed of the random workload")
    demo.set_defaults(run=_demo, check=_check)


def _check(args: argparse.Namespace) -> str | None:
    if args.commands < args.accounts:
        return (
            f"--commands ({args.commands}) must be at least --accounts ({args.accounts}):"
            " every account is opened first"
        )
    return None


def _demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.store:
        return _single_demo(args, out, as_url(args.store))
    urls = []
    for name in DEMO_REPLICAS:
        for suffix in ("", "-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)
    for name in DEMO_REPLICAS:
        urls.append(f"sqlite:///{name}")
        log.info("recreated %s", name)
    out.print(
        f"Sourcery demo: a bank of {args.accounts:,} accounts on two replicas, "
        f"{args.commands:,} commands, {args.concurrency:,} at a time on each replica"
    )
    for side, name in zip("AB", DEMO_REPLICAS, strict=True):
        out.print(f"  replica {side}: [bold]{escape(name)}[/bold]")
    with _progress(out, args.commands, PHASES[0]) as bar:

        def phase_done(phase: PhaseDone) -> None:
            print_phase(out, phase)
            flush(out)  # a pipe or a log file sees each phase as it ends
            bar.describe(PHASES[min(phase.number, len(PHASES) - 1)])

        result = run(
            run_replicated_demo(
                urls[0], urls[1], progress=bar.advance, on_phase=phase_done, **_workload(args)
            )
        )
    svg: str | None = None
    if result.most_diverged is not None:
        Path(DEMO_SVG).write_text(result.history_svg, encoding="utf-8")
        svg = DEMO_SVG
    print_replicated_demo(out, result, svg)
    return 0 if result.ok else 1


def _single_demo(args: argparse.Namespace, out: Console, url: str) -> int:
    out.print(
        f"Sourcery demo: {args.accounts} accounts, {args.commands} commands, "
        f"{args.concurrency} at a time, on [bold]{escape(redact(url))}[/bold]"
    )
    with _progress(out, args.commands, "commands") as bar:
        result = run(run_demo(url, progress=bar.advance, **_workload(args)))
    print_demo(out, result)
    return 0 if result.ok else 1


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """The workload's options, the same for both demos."""
    return {
        "n_accounts": args.accounts,
        "n_commands": args.commands,
        "concurrency": args.concurrency,
        "snapshot_every": args.snapshot_every,
        "seed": args.seed,
    }


PHASES = ("phase 1 open", "phase 2 partition", "phase 3 heal", "audit")
"""What the replicated demo's bar says while each phase runs (then the audit)."""


@dataclass(frozen=True, slots=True)
class _Bar:
    advance: Callable[[int], None]
    """Commands done so far."""
    describe: Callable[[str], None]
    """What is under way (the phase)."""


@contextlib.contextmanager
def _progress(out: Console, total: int, what: str) -> Iterator[_Bar]:
    """A bar of commands done and of the phase under way, on a terminal only (a bar means
    nothing in a pipe or a file, which get the phase lines instead)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    ) as bar:
        task = bar.add_task(what, total=total)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        def describe(text: str) -> None:
            bar.update(task, description=text)

        yield _Bar(advance, describe)
