"""How ``sourcery demo`` prints its results: the phases, a rich table, and the verdicts
(money conserved, replicas agree) in green or red."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sourcery._apps.demo import DemoResult, PhaseDone, ReplicatedDemoResult

__all__ = ["print_demo", "print_phase", "print_replicated_demo"]


def print_replicated_demo(out: Console, r: ReplicatedDemoResult, svg: str | None) -> None:
    """The two-replica run, after its phases (:func:`print_phase`): a table per replica,
    the verdicts, the picture."""
    out.print(_replicated_table(r))
    out.print(
        f"money acknowledged on both sides (deposited - withdrawn): {r.money_in:,}; "
        f"time {r.seconds:,.2f} s (open {r.phase_seconds[0]:,.2f} s, partition "
        f"{r.phase_seconds[1]:,.2f} s, heal {r.phase_seconds[2]:,.2f} s)"
    )
    _print_verdicts(out, r)
    if svg is not None and r.most_diverged is not None:
        merges = r.most_diverged_merges
        out.print(
            f"history of the most diverged account, {escape(str(r.most_diverged))} "
            f"({r.most_diverged_snapshots:,} snapshots, {merges:,} merge"
            f"{'' if merges == 1 else 's'}): [bold]{escape(svg)}[/bold]"
        )


def print_phase(out: Console, phase: PhaseDone) -> None:
    """One phase of the replicated demo, as soon as it ended."""
    f, took = phase.figures, f"({phase.seconds:,.2f} s)"
    if phase.number == 1:
        out.print(
            f"phase 1  opened {f['accounts']:,} accounts and deposited on A ({f['commands']:,} "
            f"commands); sync copied {f['copied']:,} records A -> B {took}"
        )
    elif phase.number == 2:
        out.print(
            f"phase 2  partition: {f['commands_a']:,} commands on A and {f['commands_b']:,} "
            f"on B at once, no sync; the two sides' accounts diverge {took}"
        )
    else:
        out.print(
            f"phase 3  heal: sync copied {f['a_to_b']:,} records A -> B and {f['b_to_a']:,} "
            f"B -> A; {f['siblings']:,} accounts had siblings (divergent heads) {took}"
        )
        out.print(
            "         read every account on both replicas (resolving the siblings), "
            f"sync ({f['settled']:,} records), read again"
        )


def _replicated_table(r: ReplicatedDemoResult) -> Table:
    a, b = r.a, r.b
    table = Table(title="Sourcery demo", title_justify="left")
    table.add_column("")
    table.add_column("replica A", justify="right")
    table.add_column("replica B", justify="right")
    table.add_column("both", justify="right")

    def row(label: str, x: int, y: int, both: int | None) -> None:
        table.add_row(label, f"{x:,}", f"{y:,}", "" if both is None else f"{both:,}")

    row("commands", a.commands, b.commands, r.commands)
    row("commands accepted", a.accepted, b.accepted, r.accepted)
    row("commands rejected (insufficient funds)", a.rejected, b.rejected, r.rejected)
    row("deposited", a.deposited, b.deposited, r.deposited)
    row("withdrawn", a.withdrawn, b.withdrawn, r.withdrawn)
    row("divergences healed", a.divergences, b.divergences, r.divergences)
    row("merge snapshots written", a.resolved, b.resolved, a.resolved + b.resolved)
    row("events merged", a.events_merged, b.events_merged, a.events_merged + b.events_merged)
    row("compensations (Overdrawn events recorded)", a.overdrafts, b.overdrafts, None)
    row("snapshots stored", a.snapshots, b.snapshots, None)
    row("merge snapshots stored", a.merges, b.merges, None)
    row("sum of balances", a.balances, b.balances, None)
    return table


def _print_verdicts(out: Console, r: ReplicatedDemoResult) -> None:
    if r.conserved:
        out.print(
            "[green]money conserved: yes[/green] "
            f"(each replica's balances add up to {r.money_in:,})"
        )
    else:
        out.print(
            f"[red]money conserved: NO[/red] (money in {r.money_in:,}; sum of balances "
            f"{r.a.balances:,} on A, {r.b.balances:,} on B)"
        )
    if r.agree:
        out.print("[green]replicas agree: yes[/green] (every account's state and vector clock)")
    else:
        shown = ", ".join(r.disagreements[:5])
        more = f" and {len(r.disagreements) - 5:,} more" if len(r.disagreements) > 5 else ""
        out.print(
            f"[red]replicas agree: NO[/red] ({len(r.disagreements):,} accounts differ: "
            f"{escape(shown)}{more})"
        )


def print_demo(out: Console, r: DemoResult) -> None:
    """The single-store run: a table of counts, then the verdicts."""
    table = Table(title="Sourcery demo", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("accounts", f"{r.accounts:,}"),
        ("commands accepted", f"{r.accepted:,}"),
        ("commands rejected (insufficient funds)", f"{r.rejected:,}"),
        ("events written", f"{r.events:,}"),
        ("events read back", f"{r.events_stored:,}"),
        ("snapshots taken", f"{r.snapshots:,}"),
        ("transactions", f"{r.transactions:,}"),
        ("average batch (commits per transaction)", f"{r.average_batch:,.1f}"),
        ("time", f"{r.seconds:,.2f} s"),
        ("commands/s", f"{r.commands_per_second:,.0f}"),
        ("deposited", f"{r.deposited:,}"),
        ("withdrawn", f"{r.withdrawn:,}"),
        ("money in (deposited - withdrawn)", f"{r.money_in:,}"),
        ("sum of balances after reopening", f"{r.balances:,}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
    if r.conserved:
        out.print("[green]money conserved: yes[/green]")
    else:
        out.print(
            f"[red]money conserved: NO[/red] (money in {r.money_in:,}, "
            f"sum of balances {r.balances:,})"
        )
    if r.events != r.events_stored:
        out.print(
            f"[red]events lost or duplicated:[/red] {r.events:,} written, "
            f"{r.events_stored:,} read back"
        )
