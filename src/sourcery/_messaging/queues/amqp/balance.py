"""Lease balancing: who is live, how many leases each should hold, which to claim or let go.

No I/O: :class:`~sourcery._messaging.queues.amqp.leases.LeasedConsumer` feeds this the
presence messages it hears and the clock, and does what a :class:`Round` says.

Each worker publishes its presence (its id and the leases it holds) every interval. The
live workers are those heard of within ``LIVE_INTERVALS`` intervals. Sorted by id, each
should hold ``queues // n`` leases, plus one for the first ``queues % n``. A worker below
its share claims free leases; one above releases the excess (to workers below theirs, once
the view has been stable for a while, then waits a cooldown); a lease nobody holds for a
few intervals is claimed by any worker, whatever its share, so the queues of a dead worker
are taken over within seconds.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Set
from dataclasses import dataclass

__all__ = ["LIVE_INTERVALS", "Balance", "Peer", "Round", "shares"]

log = logging.getLogger(__name__)

LIVE_INTERVALS = 3.5
"""A worker not heard of for this many intervals is taken for gone."""
STABLE_INTERVALS = 2.0
"""A worker releases leases only once the set of live workers was stable this long."""
COOLDOWN_INTERVALS = 3.0
"""Between two releases, so that every worker has seen the last one's effect."""
STUCK_INTERVALS = 3.0
"""A lease nobody holds for this long is claimed by any worker, whatever its share."""


def shares(workers: set[str] | list[str], queues: int) -> dict[str, int]:
    """How many leases each live worker should hold."""
    ordered = sorted(workers)
    n = len(ordered)
    return {w: queues // n + (1 if k < queues % n else 0) for k, w in enumerate(ordered)}


@dataclass(slots=True)
class Peer:
    seen: float
    held: frozenset[int]
    leaving: bool


class Balance:
    """What one worker (``me``) knows of the others, over the rounds of balancing."""

    def __init__(self, me: str, queues: int, interval: float) -> None:
        self.me = me
        self.queues = queues
        self.interval = interval
        self.horizon = LIVE_INTERVALS * interval
        """Seconds a presence counts (and lives on the broker)."""
        self.peers: dict[str, Peer] = {}
        self.live: set[str] = {me}
        self.live_since = 0.0
        self.release_after = 0.0
        self.free_since: dict[int, float] = {}
        self.refused_until: dict[int, float] = {}

    def presence(self, held: Set[int], leaving: bool) -> bytes:
        """This worker's presence message."""
        return json.dumps({"id": self.me, "held": sorted(held), "leaving": leaving}).encode()

    def heard(self, body: bytes, now: float) -> bool:
        """Take in a presence message; True if it changed the view (worth a round now)."""
        try:
            data = json.loads(body)
            peer = str(data["id"])
            held = frozenset(int(i) for i in data["held"])
            leaving = bool(data.get("leaving", False))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed presence message: %r", body[:200])
            return False
        if peer == self.me:
            return False
        before = self.peers.get(peer)
        self.peers[peer] = Peer(now, held, leaving)
        if before is not None and before.held == held and before.leaving == leaving:
            return False
        for index in before.held - held if before is not None else ():
            self.refused_until.pop(index, None)  # let go of: worth a claim at once
        return True

    def round(self, now: float, held: Set[int]) -> Round:
        """Start a round of balancing at ``now``, this worker holding ``held``."""
        for peer in [p for p, seen in self.peers.items() if now - seen.seen > self.horizon]:
            del self.peers[peer]
        live = {self.me} | {p for p, seen in self.peers.items() if not seen.leaving}
        if live != self.live:
            self.live, self.live_since = live, now
        share = shares(live, self.queues)
        # Leases of leaving workers are claimed as soon as they let them go.
        taken: set[int] = set()
        going: set[int] = set()
        for other in self.peers.values():
            (going if other.leaving else taken).update(other.held)
        free = [i for i in range(self.queues) if i not in held | taken]
        for i in list(self.free_since):
            if i not in free or i in going:
                del self.free_since[i]
        for i in free:
            if i not in going:
                self.free_since.setdefault(i, now)
        patience = STUCK_INTERVALS * self.interval
        stuck = {i for i, since in self.free_since.items() if now - since >= patience}
        random.shuffle(free)
        return Round(self, now, live, share, free, stuck, share[self.me] - len(held))


@dataclass(eq=False, slots=True)
class Round:
    """One round of balancing: the free leases to try, in order, then what to let go."""

    balance: Balance
    now: float
    live: set[str]
    share: dict[str, int]
    free: list[int]
    """The leases nobody holds, shuffled: the candidates to claim."""
    stuck: set[int]
    wanted: int

    def worth_claiming(self, index: int) -> bool:
        if self.balance.refused_until.get(index, 0.0) > self.now:
            return False
        return self.wanted > 0 or index in self.stuck

    def claimed(self, index: int) -> None:
        self.wanted -= 1
        self.balance.free_since.pop(index, None)

    def refused(self, index: int) -> None:
        self.balance.refused_until[index] = self.now + self.balance.interval

    def to_release(self, active: list[int], unsettled: Mapping[int, int]) -> list[int]:
        """Which of the ``active`` leases (held, not being released) to let go now."""
        balance, now = self.balance, self.now
        me, peers = balance.me, balance.peers
        excess = len(active) - self.share[me]
        if (
            excess <= 0
            or now - balance.live_since < STABLE_INTERVALS * balance.interval
            or now < balance.release_after
        ):
            return []
        deficit = sum(max(0, self.share[p] - len(peers[p].held)) for p in self.live if p != me)
        count = min(excess, deficit)
        if count <= 0:
            return []
        balance.release_after = now + COOLDOWN_INTERVALS * balance.interval
        # The quickest handovers first: queues with the fewest unsettled deliveries.
        return sorted(active, key=lambda i: unsettled.get(i, 0))[:count]
