"""What a demo run did and what its audit found: the results the CLI prints and the
tests check. Plain frozen values; the verdicts (``conserved``, ``agree``, ``ok``) are
properties, so they cannot disagree with the counts they come from."""

from __future__ import annotations

from dataclasses import dataclass

from sourcery._core.records import ActorRef
from sourcery._engine.replication import SyncReport

__all__ = ["DemoResult", "ReplicatedDemoResult", "Side"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What a demo run did, and what the audit after reopening the store found."""

    url: str
    accounts: int
    commands: int
    accepted: int
    rejected: int
    events: int
    """Events written by the run."""
    events_stored: int
    """Events the reopened store holds (the sum of every account's frontier)."""
    snapshots: int
    """Snapshots the reopened store holds."""
    transactions: int
    batches: int
    seconds: float
    deposited: int
    withdrawn: int
    balances: int
    """The sum of every account's balance, read back after reopening the store."""

    @property
    def money_in(self) -> int:
        return self.deposited - self.withdrawn

    @property
    def conserved(self) -> bool:
        """The balances read back add up to the money that went in."""
        return self.money_in == self.balances

    @property
    def ok(self) -> bool:
        """Money conserved, and every event written was read back exactly once."""
        return self.conserved and self.events == self.events_stored

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    @property
    def average_batch(self) -> float:
        """Commands that shared one transaction, on average."""
        return self.batches / self.transactions if self.transactions else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """One replica of the replicated demo: what it accepted, and what it held at the end."""

    name: str
    url: str
    commands: int
    accepted: int
    rejected: int
    deposited: int
    withdrawn: int
    balances: int
    """The sum of every account's balance as this replica reads it at the end."""
    overdrafts: int
    """``Overdrawn`` events in the final states: compensations recorded by merges."""
    snapshots: int
    merges: int
    """Snapshots with two or more parents: divergences healed, by any replica."""
    divergences: int
    """Reads of this replica's runtime that found several heads (``resolutions``)."""
    resolved: int
    events_merged: int
    compensations: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicatedDemoResult:
    """What a replicated demo run did, and what its audit found."""

    accounts: int
    commands: int
    a: Side
    b: Side
    opening_commands: int
    """Commands of phase 1, all on A (opens and opening deposits)."""
    opening: SyncReport
    """Phase 1: the opened accounts copied from A to B."""
    heal: SyncReport
    """Phase 3: the first exchange after the partition."""
    settle: SyncReport
    """Phase 3: the exchange after both replicas resolved what they read."""
    siblings: int
    """Accounts with several heads (divergent snapshots) right after the heal exchange."""
    disagreements: tuple[str, ...]
    """Accounts whose state or clock differ between the replicas at the end."""
    most_diverged: ActorRef | None
    most_diverged_snapshots: int
    most_diverged_merges: int
    history_svg: str
    """A picture of the most diverged account's history (see ``history_svg``)."""
    seconds: float
    phase_seconds: tuple[float, float, float]

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.a, self.b)

    @property
    def accepted(self) -> int:
        return self.a.accepted + self.b.accepted

    @property
    def rejected(self) -> int:
        return self.a.rejected + self.b.rejected

    @property
    def deposited(self) -> int:
        return self.a.deposited + self.b.deposited

    @property
    def withdrawn(self) -> int:
        return self.a.withdrawn + self.b.withdrawn

    @property
    def money_in(self) -> int:
        """What both replicas acknowledged: deposited minus withdrawn, on either side."""
        return self.deposited - self.withdrawn

    @property
    def conserved(self) -> bool:
        """Each replica's balances add up to the money acknowledged on both sides."""
        return all(side.balances == self.money_in for side in self.sides)

    @property
    def agree(self) -> bool:
        return not self.disagreements

    @property
    def divergences(self) -> int:
        return self.a.divergences + self.b.divergences

    @property
    def ok(self) -> bool:
        return self.conserved and self.agree


@dataclass(frozen=True, slots=True)
class PhaseDone:
    """One phase of the replicated demo, reported as soon as it ends: its number (1 open,
    2 partition, 3 heal), how long it took, and its figures by name."""

    number: int
    seconds: float
    figures: dict[str, int]
